"""SpotEdit's partial-attention processors, alone, against diffusers' stock processors (both families).

The adapter runs the transformer; the routing seam gathers the query rows (and their positions) from
layer 0, the processors complete keys and values from the per-edit cache.
"""
import math

import pytest
import torch

from spot_helpers import Model
from actors.families.flux_kontext.attention import FluxSpotProcessor
from actors.families.qwen_image_edit.attention import QwenSpotProcessor
from actors.spot_attention import SpotCall, attention_modules, fuse, spot_attention

TOL = 1e-5


@pytest.fixture(params=["flux", "qwen"])
def model(request, flux_pipe, qwen_pipe, image_factory):
    return Model(flux_pipe if request.param == "flux" else qwen_pipe, image_factory(96, 64, seed=2))


def zero_cond_t_pipe(qwen_pipe):
    from diffusers import QwenImageEditPipeline, QwenImageTransformer2DModel

    torch.manual_seed(0)   # a keyword, not a dict entry: from_config drops keys listed as defaults
    transformer = QwenImageTransformer2DModel.from_config(qwen_pipe.transformer.config, zero_cond_t=True)
    assert transformer.config.zero_cond_t
    return QwenImageEditPipeline(**{**qwen_pipe.components, "transformer": transformer})


def _subset(n, seed=0):
    active = torch.nonzero(torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.4).flatten()
    assert 0 < active.numel() < n
    return active


def test_full_and_all_active_calls_equal_stock(model):
    stock = model()
    kv = model.kv()
    with spot_attention(model.pipe.transformer, model.family, kv):
        kv.call = SpotCall()
        full = model()
        # every noisy token active, source recomputed: the complete sequence through the partial path
        kv.call = SpotCall(active=torch.arange(model.n), source_queries=True, alpha=0.3)
        partial = model()
        # every noisy token active, source K/V from the cache the full call just filled (same inputs)
        kv.call = SpotCall(active=torch.arange(model.n), source_queries=False)
        cached_source = model(source=False)
    assert (full - stock).abs().max() <= TOL
    assert (partial - stock).abs().max() <= TOL
    assert (cached_source - stock).abs().max() <= TOL


def test_fresh_cache_reproduces_full_call_on_active_rows(model):
    """With caches filled at the same inputs, queries for a subset see exactly the full call's keys."""
    _check_fresh_cache(model)


def test_fresh_cache_with_zero_cond_t(qwen_pipe, image_factory):
    # source tokens modulated with t=0: `modulate_index` must follow the gathered rows
    _check_fresh_cache(Model(zero_cond_t_pipe(qwen_pipe), image_factory(96, 64, seed=2)))


def _check_fresh_cache(model):
    stock = model()
    active = _subset(model.n)
    kv = model.kv()
    with spot_attention(model.pipe.transformer, model.family, kv):
        kv.call = SpotCall()
        model()
        kv.call = SpotCall(active=active, source_queries=False, noisy_context=True, alpha=None)
        partial = model(active=active, source=False)
        assert kv.image_keys() == model.n + model.s and kv.image_queries() == active.numel()
    assert partial.shape[1] == active.numel()
    assert (partial - stock[:, active]).abs().max() <= TOL
    # and without the cached non-edited context (naive skip) the same rows do change
    kv = model.kv()
    with spot_attention(model.pipe.transformer, model.family, kv):
        kv.call = SpotCall()
        model()
        kv.call = SpotCall(active=active, source_queries=False, noisy_context=False)
        skipped = model(active=active, source=False)
        assert kv.image_keys() == active.numel() + model.s
    assert (skipped - stock[:, active]).abs().max() > 100 * TOL


def test_fusion_blend_and_cache_update_are_exact(flux_pipe, image_factory):
    """The pre-RoPE cache ("concat"); the post-RoPE buffers are checked against it in tests/test_spot_buffers.py."""
    model = Model(flux_pipe, image_factory(96, 64, seed=2))
    active = _subset(model.n, seed=1)
    kv = model.kv(path="concat")
    with spot_attention(model.pipe.transformer, "flux", kv):
        kv.call = SpotCall()
        model()
        before = {i: (kv.layer(i).noisy_k.clone(), kv.layer(i).noisy_v.clone()) for i in range(4)}
        alpha = math.cos(math.pi * 0.7 / 2) ** 2
        kv.call = SpotCall(active=active, source_queries=False, alpha=alpha)
        model(active=active, source=False)
        skipped = torch.ones(model.n, dtype=torch.bool)
        skipped[active] = False
        for i in range(4):
            layer = kv.layer(i)
            k0, v0 = before[i]
            assert torch.equal(layer.noisy_k[:, skipped], fuse(k0, layer.source_k[:, : model.n], alpha)[:, skipped])
            assert torch.equal(layer.noisy_v[:, skipped], fuse(v0, layer.source_v[:, : model.n], alpha)[:, skipped])
            # active rows hold this call's keys: in layer 0 they come from the same inputs as before (equal up to
            # rounding of the smaller matmul), deeper they have seen the fused context, so they moved
            moved = (layer.noisy_k[:, active] - k0[:, active]).abs().max()
            assert moved <= TOL if i == 0 else moved > 100 * TOL
    assert torch.equal(fuse(torch.tensor([4.0]), torch.tensor([8.0]), 0.25), torch.tensor([7.0]))


def test_branches_have_their_own_caches_and_processors_go_away(qwen_pipe, image_factory):
    model = Model(qwen_pipe, image_factory(96, 64, seed=2))
    assert model.inputs.cond["negative"] is not None   # true CFG: a cond and an uncond call per step
    tr = model.pipe.transformer
    originals = [m.processor for m in attention_modules(tr)]
    kv = model.kv()
    with pytest.raises(RuntimeError, match="boom"):
        with spot_attention(tr, "qwen", kv):
            assert all(isinstance(m.processor, QwenSpotProcessor) for m in attention_modules(tr))
            kv.call = SpotCall()
            model()
            assert set(kv.state._state_cache) == {"cond", "uncond"}
            last = len(attention_modules(tr)) - 1   # past layer 0, image keys depend on the prompt
            assert not torch.equal(kv.state._state_cache["cond"].layers[last].buffers.k,
                                   kv.state._state_cache["uncond"].layers[last].buffers.k)
            raise RuntimeError("boom")
    assert [m.processor for m in attention_modules(tr)] == originals
    assert not kv.state._state_cache
    assert "dropedit_spot_branch" not in getattr(tr, "_diffusers_hook").hooks
    assert not any(isinstance(p, FluxSpotProcessor) for p in originals)
