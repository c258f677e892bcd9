"""Per-layer routing (ToPi's Mode B) and attention statistics, against references computed another way:

- pruning after layer K equals the full sequence with the dropped source tokens masked out as keys in
  every layer from K on (and present before K);
- the statistics (from the layer's own attention call) equal the brute-force softmax over the q, k, v the
  stock processor really used;
- merging equals an explicit per-token loop.
"""
import pytest
import torch
from diffusers.models.transformers import transformer_flux, transformer_qwenimage

import actors
from actors.attention_stats import AttentionCollector, collecting_attention
from actors.routing import Routing, merge_into_kept, routed_blocks, transformer_layers

TOL = 1e-4


def _prepare(pipe, image):
    editor = actors.Editor(pipe, None)
    inputs = editor.adapter.prepare([image], "turn the cat into a dog", seed=1, steps=4,
                                    guidance_scale=None, height=64, width=96)
    return editor.adapter, inputs


def _counting_dispatch(module, monkeypatch, num_layers, on_call):
    """Wrap the module's attention call; `on_call(layer, q, k, v, mask)` may return a new mask."""
    original = module.dispatch_attention_fn
    calls = {"n": 0}

    def wrapped(query, key, value, attn_mask=None, *args, **kwargs):
        layer = calls["n"] % num_layers
        calls["n"] += 1
        attn_mask = on_call(layer, query, key, value, attn_mask)
        return original(query, key, value, attn_mask, *args, **kwargs)

    monkeypatch.setattr(module, "dispatch_attention_fn", wrapped)


@pytest.mark.parametrize("family", ["flux", "qwen"])
@pytest.mark.parametrize("from_layer", [1, 3])
def test_prune_after_layer_equals_masking_keys_from_that_layer(family, from_layer, flux_pipe, qwen_pipe,
                                                               image_factory, monkeypatch):
    pipe, module = (flux_pipe, transformer_flux) if family == "flux" else (qwen_pipe, transformer_qwenimage)
    num_layers = len(transformer_layers(pipe.transformer))
    from_layer = min(from_layer, num_layers - 1)
    adapter, inputs = _prepare(pipe, image_factory(96, 64))
    n_noisy, n_source = inputs.latents.shape[1], inputs.source.shape[1]
    keep = torch.rand(n_source, generator=torch.Generator().manual_seed(3)) < 0.4
    rows = torch.cat([torch.arange(n_noisy), torch.nonzero(keep).flatten() + n_noisy])
    t = inputs.timesteps[1]
    routing = Routing(family=family, num_noisy=n_noisy)
    with torch.no_grad(), adapter.attach(inputs), routed_blocks(pipe.transformer, routing):
        routing.set(rows, from_layer)
        pruned = adapter.velocity(inputs, inputs.latents, t, None)
        routing.clear()
        full = adapter.velocity(inputs, inputs.latents, t, None)

    def mask_from_layer(layer, q, k, v, attn_mask):
        if layer < from_layer:
            return attn_mask
        text = k.shape[1] - n_noisy - n_source
        keep_keys = torch.cat([torch.ones(text + n_noisy, dtype=torch.bool), keep])[None, None, None, :]
        if attn_mask is None:
            return keep_keys
        if attn_mask.dtype == torch.bool:
            return attn_mask & keep_keys
        return attn_mask.masked_fill(~keep_keys, float("-inf"))

    _counting_dispatch(module, monkeypatch, num_layers, mask_from_layer)
    with torch.no_grad(), adapter.attach(inputs):
        masked = adapter.velocity(inputs, inputs.latents, t, None)
    assert pruned.shape == masked.shape == inputs.latents.shape
    assert (pruned - masked).abs().max() <= TOL
    assert (pruned - full).abs().max() > 10 * TOL   # pruning really changed something


def test_route_at_layer_zero_equals_dropping_at_the_input(flux_pipe, image_factory):
    adapter, inputs = _prepare(flux_pipe, image_factory(96, 64))
    n_noisy, n_source = inputs.latents.shape[1], inputs.source.shape[1]
    index = torch.arange(0, n_source, 3)
    routing = Routing(family="flux", num_noisy=n_noisy)
    t = inputs.timesteps[2]
    with torch.no_grad(), routed_blocks(flux_pipe.transformer, routing):
        at_input = adapter.velocity(inputs, inputs.latents, t, index)
        routing.set(torch.cat([torch.arange(n_noisy), index + n_noisy]), 0)
        at_block = adapter.velocity(inputs, inputs.latents, t, None)
    assert (at_input - at_block).abs().max() <= 1e-5


@pytest.mark.parametrize("family", ["flux", "qwen"])
def test_chunked_statistics_equal_brute_force_softmax(family, flux_pipe, qwen_pipe, image_factory, monkeypatch):
    pipe, module = (flux_pipe, transformer_flux) if family == "flux" else (qwen_pipe, transformer_qwenimage)
    num_layers = len(transformer_layers(pipe.transformer))
    adapter, inputs = _prepare(pipe, image_factory(96, 64))
    n_noisy = inputs.latents.shape[1]
    seen = {}

    def capture(layer, q, k, v, attn_mask):
        seen.setdefault(layer, []).append((q.detach().clone(), k.detach().clone(), v.detach().clone(), attn_mask))
        return attn_mask

    collector = AttentionCollector(num_noisy=n_noisy, chunk=5)   # many chunks, one ragged
    with torch.no_grad(), adapter.attach(inputs):
        with monkeypatch.context() as m:   # the stock call's q, k, v (recorded layers make their own call)
            _counting_dispatch(module, m, num_layers, capture)
            adapter.velocity(inputs, inputs.latents, inputs.timesteps[0], None)
        with collecting_attention(pipe.transformer, family, collector):
            collector.request(tuple(range(num_layers)))
            adapter.velocity(inputs, inputs.latents, inputs.timesteps[0], None)
            stats, seconds = collector.take()
    assert sorted(stats) == list(range(num_layers)) and seconds > 0 and sorted(seen) == list(range(num_layers))
    for layer, calls in seen.items():   # Qwen's true CFG calls the transformer twice: stats are summed
        assert stats[layer].calls == len(calls) == (2 if family == "qwen" else 1)
        mass, value_norm = 0, 0
        for q, k, v, attn_mask in calls:
            text = k.shape[1] - n_noisy - inputs.source.shape[1]
            logits = torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double()) / q.shape[-1] ** 0.5
            if attn_mask is not None:
                logits = logits.masked_fill(~attn_mask.bool().expand_as(logits), float("-inf"))
            attention = logits.softmax(-1)[0]                              # [H, N, N], the full matrix
            mass = mass + attention[:, text: text + n_noisy, text + n_noisy:].sum(1)
            value_norm = value_norm + v[0, text + n_noisy:].double().norm(dim=-1).T
        assert torch.allclose(stats[layer].mass.double(), mass, atol=1e-5, rtol=1e-5)
        assert torch.allclose(stats[layer].value_norm.double(), value_norm, atol=1e-5, rtol=1e-5)


def test_statistics_leave_the_output_unchanged(flux_pipe, image_factory):
    adapter, inputs = _prepare(flux_pipe, image_factory(96, 64))
    collector = AttentionCollector(num_noisy=inputs.latents.shape[1])
    t = inputs.timesteps[0]
    with torch.no_grad():
        plain = adapter.velocity(inputs, inputs.latents, t, None)
        with collecting_attention(flux_pipe.transformer, "flux", collector):
            collector.request((0, 2, 3))
            wrapped = adapter.velocity(inputs, inputs.latents, t, None)
    assert torch.equal(plain, wrapped)
    assert all(type(b.attn.processor).__name__ == "FluxAttnProcessor" for b in transformer_layers(flux_pipe.transformer))


def test_merge_averages_each_dropped_token_into_its_most_similar_kept_token():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, 10, 6, generator=g)
    num_noisy = 3
    rows = torch.tensor([0, 1, 2, 4, 7])               # kept source tokens: 4 and 7
    merged = merge_into_kept(hidden, rows, num_noisy)
    groups = {4: [hidden[0, 4]], 7: [hidden[0, 7]]}
    for j in (3, 5, 6, 8, 9):
        sims = {c: torch.cosine_similarity(hidden[0, j], hidden[0, c], dim=0) for c in (4, 7)}
        groups[max(sims, key=sims.get)].append(hidden[0, j])
    expected = torch.stack([hidden[0, 0], hidden[0, 1], hidden[0, 2],
                            torch.stack(groups[4]).mean(0), torch.stack(groups[7]).mean(0)])
    assert torch.allclose(merged[0], expected, atol=1e-6)
