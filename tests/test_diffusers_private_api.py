"""The private diffusers API this project relies on, checked directly: when a diffusers release changes
one of these, this file fails by name instead of an edit going subtly wrong somewhere else.

Where each is used: `_get_qkv_projections` (actors/families/flux_kontext/attention.py), `_unpack_latents`
(actors/families/*/vae.py), `_execution_device` (the family adapters), `StateManager._context` and
`CacheContext` (actors/spot_attention.py, the CFG branch of SpotEdit's cache), a processor's
`_attention_backend` / `_parallel_config` (copied onto ours), `_pack_latents` and `_prepare_latent_image_ids`
(finetune/flow_matching.py); FLUX.2 (actors/families/flux2/): transformer_flux2's `_get_qkv_projections`,
Flux2KleinPipeline's and Flux2Pipeline's `_prepare_latent_ids`, `_unpack_latents_with_ids`, `_unpatchify_latents`
and their image processor's `_resize_to_target_area`."""
import inspect

import torch
from diffusers import FluxKontextPipeline, QwenImageEditPipeline, QwenImageEditPlusPipeline
from diffusers.hooks.hooks import BaseState, CacheContext, StateManager
from diffusers.models.transformers import transformer_flux


def test_flux_qkv_projections_return_six_projections():
    attn = transformer_flux.FluxAttention(query_dim=32, heads=2, dim_head=16, added_kv_proj_dim=32).eval()
    hidden, text = torch.randn(1, 5, 32), torch.randn(1, 3, 32)
    out = transformer_flux._get_qkv_projections(attn, hidden, text)
    assert len(out) == 6 and out[0].shape == (1, 5, 32) and out[3].shape == (1, 3, 32)
    assert attn.head_dim == 16


def test_unpack_latents_is_a_static_method_with_the_known_signature():
    for cls in (FluxKontextPipeline, QwenImageEditPipeline, QwenImageEditPlusPipeline):
        assert isinstance(inspect.getattr_static(cls, "_unpack_latents"), staticmethod), cls
        params = list(inspect.signature(cls._unpack_latents).parameters)
        assert params == ["latents", "height", "width", "vae_scale_factor"], (cls, params)
    packed = torch.arange(4 * 16 * 16, dtype=torch.float32).reshape(1, 16, 64)   # 4x4 tokens of 16·4 channels
    assert FluxKontextPipeline._unpack_latents(packed, 64, 64, 8).shape == (1, 16, 8, 8)
    assert QwenImageEditPipeline._unpack_latents(packed, 64, 64, 8).shape == (1, 16, 1, 8, 8)


def test_pipelines_have_an_execution_device():
    for cls in (FluxKontextPipeline, QwenImageEditPipeline, QwenImageEditPlusPipeline):
        assert isinstance(inspect.getattr_static(cls, "_execution_device"), property), cls


def test_state_manager_keeps_its_context_in_a_private_attribute():
    class S(BaseState):
        def reset(self, *args, **kwargs):
            pass

    manager = StateManager(S)
    assert manager._context is None
    manager.set_context(CacheContext("cond"))
    assert manager._context is not None and isinstance(manager.get_state(), S)


def test_attention_processors_carry_backend_and_parallel_config():
    attn = transformer_flux.FluxAttention(query_dim=32, heads=2, dim_head=16)
    for name in ("_attention_backend", "_parallel_config"):
        assert hasattr(attn.processor, name), name


def test_flux_kontext_pipeline_packs_latents_and_ids():
    assert isinstance(inspect.getattr_static(FluxKontextPipeline, "_pack_latents"), staticmethod)
    assert isinstance(inspect.getattr_static(FluxKontextPipeline, "_prepare_latent_image_ids"), staticmethod)


def test_flux2_private_helpers_keep_their_shape():
    from diffusers import Flux2KleinPipeline, Flux2Pipeline
    from diffusers.models.transformers import transformer_flux2
    from diffusers.pipelines.flux2.image_processor import Flux2ImageProcessor

    attn = transformer_flux2.Flux2Attention(query_dim=32, heads=2, dim_head=16, added_kv_proj_dim=32).eval()
    out = transformer_flux2._get_qkv_projections(attn, torch.randn(1, 5, 32), torch.randn(1, 3, 32))
    assert len(out) == 6 and out[0].shape == (1, 5, 32) and out[3].shape == (1, 3, 32)
    for pipeline in (Flux2KleinPipeline, Flux2Pipeline):
        for name in ("_prepare_latent_ids", "_unpack_latents_with_ids", "_unpatchify_latents"):
            assert isinstance(inspect.getattr_static(pipeline, name), staticmethod), name
        ids = pipeline._prepare_latent_ids(torch.zeros(1, 8, 2, 3))
        assert ids.shape == (1, 6, 4)
        packed = torch.arange(6 * 8, dtype=torch.float32).reshape(1, 6, 8)
        assert pipeline._unpack_latents_with_ids(packed, ids).shape == (1, 8, 2, 3)   # the grid from the ids
        assert pipeline._unpatchify_latents(torch.zeros(1, 8, 2, 3)).shape == (1, 2, 4, 6)
    assert Flux2KleinPipeline._unpack_latents_with_ids(packed, ids, 2, 3).shape == (1, 8, 2, 3)
    assert isinstance(inspect.getattr_static(Flux2ImageProcessor, "_resize_to_target_area"), staticmethod)
