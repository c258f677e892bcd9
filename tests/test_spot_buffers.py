"""SpotEdit's post-RoPE K/V buffers (actors.spot_buffers, `SpotKV.path = "buffers"`) against the pre-RoPE path
they replace ("concat", `SpotKV.assemble`), on the tiny Flux Kontext and Qwen-Image-Edit models.

Exactness: without a blend (focus's and RegionE's static context, dropped source keys, naive skip) attention
reads the same keys and values in the same order, so the outputs are equal bit for bit in fp32. With
SpotFusion's blend the keys differ by rounding only: the blend and the rotation are applied in the other order
(measured ≤ 1.2e-6 on velocities of order 1; allowed 5e-6); the values are blended by the same `torch.lerp`,
bit for bit. Whole edits on both paths agree within the engine's parity tolerance (1e-3 on pixels).
"""
import math

import pytest
import torch

import actors
from spot_helpers import Model, median_score
import policies
from actors.families.flux_kontext import attention as flux_attention
from actors.families.flux_kontext.attention import FluxRotary
from actors.families.qwen_image_edit.attention import QwenRotary
from actors.mechanisms import QuerySkip
from actors.routing import Routing, routed_blocks
from actors.spot_attention import SpotCall, SpotKV, spot_attention
from actors.spot_buffers import blend_weight, fusion_columns
from policies.spotedit import official_alpha

BLEND_TOL = 5e-6   # fp32: blend-then-rotate against rotate-then-blend (rounding of the other order)
PIXEL_TOL = 1e-3   # tests/test_engine_parity.py's tolerance on output pixels in [0, 1]
PROMPT = "make the circle red"


@pytest.fixture(params=["flux", "qwen"])
def model(request, flux_pipe, qwen_pipe, image_factory):
    return Model(flux_pipe if request.param == "flux" else qwen_pipe, image_factory(96, 64, seed=2))


def _subset(n, seed, share=0.4):
    return torch.nonzero(torch.rand(n, generator=torch.Generator().manual_seed(seed)) < share).flatten()


def _calls(model, case):
    """(SpotKV flags, [(SpotCall, source rows enter)]) of one case: a full call, then partial calls."""
    a, b, keep = _subset(model.n, 1), _subset(model.n, 2), _subset(model.s, 3, 0.6)
    cached = dict(source_queries=False)
    return {
        "static": ({}, [(SpotCall(active=a, **cached), False), (SpotCall(active=b, **cached), False)]),
        "dropped keys": ({}, [(SpotCall(active=a, source_keys=keep, **cached), False),
                              (SpotCall(active=b, source_keys=keep, **cached), False),
                              (SpotCall(active=b, source_keys=_subset(model.s, 4, 0.5), **cached), False),
                              (SpotCall(active=a, **cached), False)]),
        "naive skip": (dict(cache_noisy=False), [(SpotCall(active=a, noisy_context=False, **cached), False)]),
        "naive skip, source recomputed": (dict(cache_noisy=False, cache_source=False),
                                          [(SpotCall(active=a, noisy_context=False), True)]),
        "paper": (dict(fusion=True), [(SpotCall(active=a, alpha=0.6, **cached), False),
                                      (SpotCall(active=b, alpha=0.8, **cached), False),
                                      (SpotCall(active=a, alpha=0.3, **cached), False)]),
        "official": (dict(fusion=True), [(SpotCall(active=a, alpha=official_alpha(0.7), recursive=False, **cached),
                                          False),
                                         (SpotCall(active=b, alpha=official_alpha(0.5), recursive=False, **cached),
                                          False)]),
        "paper, source recomputed": (dict(fusion=True, cache_source=False),
                                     [(SpotCall(active=a, alpha=0.6), True), (SpotCall(active=b, alpha=0.8), True)]),
    }[case]


def _run(model, path, case):
    flags, calls = _calls(model, case)
    kv = model.kv(path=path, **flags)
    with spot_attention(model.pipe.transformer, model.family, kv):
        kv.call = SpotCall()
        out = [model()]
        for call, source in calls:
            kv.call = call
            out.append(model(active=call.active, source=source))
    return out


@pytest.mark.parametrize("case", ["static", "dropped keys", "naive skip", "naive skip, source recomputed"])
def test_without_a_blend_both_paths_are_bitwise_equal(model, case):
    for ours, theirs in zip(_run(model, "buffers", case), _run(model, "concat", case)):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("case", ["paper", "official", "paper, source recomputed"])
def test_with_a_blend_both_paths_agree_within_rounding(model, case):
    ours, theirs = _run(model, "buffers", case), _run(model, "concat", case)
    assert torch.equal(ours[0], theirs[0])   # the full call
    for a, b in zip(ours[1:], theirs[1:]):
        assert 0 < (a - b).abs().max() <= BLEND_TOL


def test_blended_cache_rows_match_the_pre_rope_cache(model):
    """After a recursive blend, the buffers' frozen noisy rows are the pre-RoPE cache's rows rotated (keys,
    within rounding) and the same rows (values, bit for bit); the source rows are the cached ones."""
    active, alpha = _subset(model.n, 1), 0.6
    kvs = {path: model.kv(path=path, fusion=True) for path in ("buffers", "concat")}
    layers = {}
    for path, kv in kvs.items():
        with spot_attention(model.pipe.transformer, model.family, kv):
            kv.call = SpotCall()
            model()
            kv.call = SpotCall(active=active, source_queries=False, alpha=alpha)
            model(active=active, source=False)
            layers[path] = dict(kv.state._state_cache["cond"].layers)   # the caches go with the processors
    frozen = torch.ones(model.n, dtype=torch.bool)
    frozen[active] = False
    assert len(layers["buffers"]) == len(layers["concat"]) > 0
    for i, entry in layers["buffers"].items():
        buf, pre = entry.buffers, layers["concat"][i]
        t, n = buf.text, model.n
        assert torch.equal(buf.v[:, t:t + n][:, frozen], pre.noisy_v[:, frozen])
        assert torch.equal(buf.v[:, t + n:], pre.source_v)
        rotated = _rotate(model, pre.noisy_k, kvs["buffers"].key_rotary)
        assert (buf.k[:, t:t + n][:, frozen] - rotated[:, frozen]).abs().max() <= BLEND_TOL


def _rotate(model, k, table):
    if model.family == "flux":
        return flux_attention.rotate(k, tuple(x[: k.shape[1]] for x in table))
    from actors.families.qwen_image_edit.attention import rotate
    return rotate(k, table[: k.shape[1]])


def test_fusion_columns_are_the_first_rope_axis(model):
    """Kontext's reference index / Qwen's frame: the first axis (4 of 16 head dims on the tiny models, 16 of 128
    on the real ones) is the only one on which a noisy token and its aligned source token rotate differently."""
    rot = FluxRotary if model.family == "flux" else QwenRotary
    kv = model.kv()
    assert fusion_columns(kv, rot) == (0, model.pipe.transformer.config.axes_dims_rope[0])
    assert fusion_columns(kv, None) is None


def test_attention_reads_a_view_of_the_buffers(flux_pipe, image_factory, monkeypatch):
    """A partial call hands attention the buffers themselves: no full-size key or value tensor is made."""
    model = Model(flux_pipe, image_factory(96, 64, seed=2))
    seen = []
    original = flux_attention.dispatch_attention_fn

    def spy(query, key, value, **kwargs):
        seen.append((key.data_ptr(), value.data_ptr(), key.shape[1]))
        return original(query, key, value, **kwargs)

    monkeypatch.setattr(flux_attention, "dispatch_attention_fn", spy)
    kv, active = model.kv(fusion=True), _subset(model.n, 1)
    with spot_attention(model.pipe.transformer, "flux", kv):
        kv.call = SpotCall()
        model()
        seen.clear()
        kv.call = SpotCall(active=active, source_queries=False, alpha=0.6)
        model(active=active, source=False)
        for i, (k_ptr, v_ptr, keys) in enumerate(seen):
            buf = kv.layer(i).buffers
            assert (k_ptr, v_ptr, keys) == (buf.k.data_ptr(), buf.v.data_ptr(), buf.text + model.n + model.s)


def test_an_alpha_that_rounds_to_one_blends_nothing_in_bf16():
    """The official α (≥ 1 − 2.5e-6) is 1 in bf16: no blend at all (the frozen rows of the buffers stay as the
    full call left them, and the blend's source keys are never read); in fp32 the same α blends. The output
    equals the pre-RoPE path's, which does blend, within bf16 rounding of the few elements it moves."""
    from actors.tiny_models import build_tiny_flux_kontext
    tr = build_tiny_flux_kontext(num_attention_heads=2, attention_head_dim=32).transformer.eval()
    tr = tr.to(torch.bfloat16)
    n, text, side = 64, 16, 8
    ids = torch.zeros(2 * n, 3)
    ids[:, 1], ids[:, 2], ids[n:, 0] = torch.arange(2 * n) // side % side, torch.arange(2 * n) % side, 1
    g = torch.Generator().manual_seed(0)
    kw = dict(hidden_states=torch.randn(1, 2 * n, 64, generator=g).bfloat16(),
              encoder_hidden_states=torch.randn(1, text, tr.config.joint_attention_dim, generator=g).bfloat16(),
              pooled_projections=torch.randn(1, tr.config.pooled_projection_dim, generator=g).bfloat16(),
              timestep=torch.tensor([0.5]), guidance=torch.tensor([2.5]), img_ids=ids, txt_ids=torch.zeros(text, 3),
              return_dict=False)
    alpha, active = official_alpha(0.9), torch.arange(0, n, 3)
    assert alpha < 1 and float(torch.tensor(alpha, dtype=torch.bfloat16)) == 1.0
    out = {}
    for path in ("buffers", "concat"):
        kv = SpotKV(num_noisy=n, num_source=n, key_rotary=tr.pos_embed(ids), fusion=True, path=path)
        routing = Routing(family="flux", num_noisy=n)
        with torch.no_grad(), routed_blocks(tr, routing), spot_attention(tr, "flux", kv):
            kv.call = SpotCall()
            tr(**kw)
            if path == "buffers":
                before = [kv.layer(i).buffers.k.clone() for i in range(4)]
                for i in range(4):
                    kv.layer(i).buffers.target = None   # a blend would need it and fail
            routing.set(active, from_layer=0)
            for recursive in (True, False):
                kv.call = SpotCall(active=active, source_queries=False, alpha=alpha, recursive=recursive)
                assert blend_weight(kv, torch.bfloat16) is None and blend_weight(kv, torch.float32) == alpha
                out[path, recursive] = tr(**kw)[0][:, : active.numel()].float()
            if path == "buffers":
                frozen = torch.ones(n, dtype=torch.bool)
                frozen[active] = False
                for i in range(4):
                    buf = kv.layer(i).buffers
                    rows = slice(buf.text, buf.text + n)
                    assert torch.equal(buf.k[:, rows][:, frozen], before[i][:, rows][:, frozen])
    for recursive in (True, False):
        diff = (out["buffers", recursive] - out["concat", recursive]).abs().max()
        assert diff <= 0.05 * out["concat", recursive].abs().max()


def test_a_blend_needs_the_declared_fusion(flux_pipe, image_factory):
    model = Model(flux_pipe, image_factory(96, 64, seed=2))
    kv, active = model.kv(), _subset(model.n, 1)   # fusion not declared: full calls keep no target
    with spot_attention(model.pipe.transformer, "flux", kv):
        kv.call = SpotCall()
        model()
        kv.call = SpotCall(active=active, source_queries=False, alpha=0.6)
        with pytest.raises(RuntimeError, match="fusion"):
            model(active=active, source=False)
    spot = policies.make("spotedit", fusion="spotfusion").needs.query_skip
    assert spot.fusion and not policies.make("spotedit", fusion="static").needs.query_skip.fusion
    assert not policies.make("focus").needs.query_skip.fusion


# --- whole edits on both paths -------------------------------------------------------------------------------

class PathEditor(actors.Editor):
    """An editor whose edits keep SpotEdit's K/V cache on `path` (chosen per edit, on the edit's own SpotKV)."""

    def __init__(self, pipe, policy, path):
        super().__init__(pipe, policy)
        self.path = path

    def _prepare(self, *args, **kwargs):
        state = super()._prepare(*args, **kwargs)
        for mechanism in state.mechanisms:
            if isinstance(mechanism, QuerySkip) and mechanism.spot.kv is not None:
                mechanism.spot.kv.path = self.path
        return state


def _policies(pipe, image, monkeypatch):
    spot_tau = median_score(monkeypatch, pipe, image, 128, 6,
                             policies.make("spotedit", tau=-1.0, initial_steps=1, reset_steps=[]))
    similarity = 1.0 - median_score(monkeypatch, pipe, image, 128, 7,
                                     policies.make("regione", eta=-1.0, erosion_dilation=False, warmup_steps=2,
                                                   post_steps=1, refresh_steps=[4], velocity_cache=False))
    spot = dict(tau=spot_tau, initial_steps=2, reset_steps=[4], dilate=0)
    return {
        "spotedit": (policies.make("spotedit", **spot), 6),
        "spotedit, official alpha": (policies.make("spotedit", alpha="official", **spot), 6),
        "spotedit, no condition cache": (policies.make("spotedit", condition_cache=False, **spot), 6),
        "spotedit, static": (policies.make("spotedit", fusion="static", **spot), 6),
        "spotedit, naive skip": (policies.make("spotedit", fusion="none", **spot), 6),
        "focus, reference margin": (policies.make("focus", budget=0.25, margin=0, reference_margin=1, refresh=0,
                                                  cache="none"), 6),
        "focus": (policies.make("focus", budget=0.25, margin=0, refresh=0), 6),
        "regione": (policies.make("regione", eta=similarity, erosion_dilation=False, warmup_steps=2, post_steps=1,
                                  refresh_steps=[4], gamma=0.99, delta=0.5), 7),
    }


BLENDS = ("spotedit", "spotedit, official alpha", "spotedit, no condition cache")


@pytest.mark.parametrize("fixture", ["flux_pipe", "qwen_pipe"])
def test_edits_equal_on_both_paths(fixture, request, image_factory, monkeypatch):
    pipe, image = request.getfixturevalue(fixture), image_factory(128, 128, seed=1)
    for name, (policy, steps) in _policies(pipe, image, monkeypatch).items():
        r = {path: PathEditor(pipe, policy, path).edit(image, PROMPT, seed=1, steps=steps, height=128, width=128)
             for path in ("buffers", "concat")}
        partial = [s for s in r["buffers"].trace if s.active is not None]
        assert partial and all(0 < s.active < s.noisy for s in partial), name
        assert [s.active for s in r["buffers"].trace] == [s.active for s in r["concat"].trace], name
        pixels = abs(r["buffers"].pixels.astype(float) - r["concat"].pixels.astype(float)).max()
        assert pixels <= PIXEL_TOL, name
        if name not in BLENDS:
            assert torch.equal(r["buffers"].latents, r["concat"].latents), name
        else:
            assert (r["buffers"].latents - r["concat"].latents).abs().max() <= math.sqrt(BLEND_TOL), name
