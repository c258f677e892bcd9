"""Dropping source tokens by gathering them (with their positions) must give the same noisy-token velocity
as running the whole sequence with those tokens masked out as keys in every attention layer."""
import pytest
import torch
from diffusers.models.transformers import transformer_flux, transformer_qwenimage

import actors

TOL = 1e-4


def _key_masking(module, monkeypatch, key_keep):
    """Wrap the transformer module's attention call so that keys outside `key_keep` are never attended."""
    original = module.dispatch_attention_fn

    def masked(query, key, value, attn_mask=None, *args, **kwargs):
        keep = key_keep(key.shape[1]).to(key.device)[None, None, None, :]   # [B, H, Sq, Skv]
        if attn_mask is None:
            attn_mask = keep
        elif attn_mask.dtype == torch.bool:
            attn_mask = attn_mask & keep
        else:
            attn_mask = attn_mask.masked_fill(~keep, float("-inf"))
        return original(query, key, value, attn_mask, *args, **kwargs)

    monkeypatch.setattr(module, "dispatch_attention_fn", masked)


def _check(pipe, module, image, monkeypatch, **size):
    editor = actors.Editor(pipe, None)
    inputs = editor.adapter.prepare([image], "turn the cat into a dog", seed=1, steps=4,
                                    guidance_scale=None, **size)
    n_noisy, n_source = inputs.latents.shape[1], inputs.source.shape[1]
    keep = torch.rand(n_source, generator=torch.Generator().manual_seed(0)) < 0.4
    index = torch.nonzero(keep).flatten()
    t = inputs.timesteps[1]
    with torch.no_grad(), editor.adapter.attach(inputs):
        gathered = editor.adapter.velocity(inputs, inputs.latents, t, index)
        full = editor.adapter.velocity(inputs, inputs.latents, t, None)

    def key_keep(length):   # keys are [text, noisy, source] in both model families
        text = length - n_noisy - n_source
        return torch.cat([torch.ones(text + n_noisy, dtype=torch.bool), keep])

    _key_masking(module, monkeypatch, key_keep)
    with torch.no_grad(), editor.adapter.attach(inputs):
        masked = editor.adapter.velocity(inputs, inputs.latents, t, None)
    assert gathered.shape == masked.shape == inputs.latents.shape
    assert (gathered - masked).abs().max() <= TOL
    # and dropping really changed something: the check is not vacuous
    assert (gathered - full).abs().max() > 10 * TOL


def test_flux_gather_equals_key_mask(flux_pipe, image_factory, monkeypatch):
    _check(flux_pipe, transformer_flux, image_factory(128, 96), monkeypatch, height=96, width=128)


def test_qwen_gather_equals_key_mask(qwen_pipe, image_factory, monkeypatch):
    _check(qwen_pipe, transformer_qwenimage, image_factory(128, 96), monkeypatch, height=96, width=128)


def test_qwen_zero_cond_t_gather_equals_key_mask(qwen_pipe, image_factory, monkeypatch):
    # Configs with zero_cond_t modulate source tokens with t=0 through `modulate_index`.
    from diffusers import QwenImageEditPipeline, QwenImageTransformer2DModel

    torch.manual_seed(0)   # a keyword, not a dict entry: from_config drops keys listed as defaults
    transformer = QwenImageTransformer2DModel.from_config(qwen_pipe.transformer.config, zero_cond_t=True)
    assert transformer.config.zero_cond_t
    pipe = QwenImageEditPipeline(**{**qwen_pipe.components, "transformer": transformer})
    _check(pipe, transformer_qwenimage, image_factory(96, 64), monkeypatch, height=64, width=96)
