"""Temporal caches (actors.caches) composed with every pruning policy, on both tiny model families."""
import numpy as np
import pytest
import torch
from diffusers.hooks import HookRegistry

import actors
import policies
from actors import caches
from actors.caches.runtime import BLOCK_HOOK, ROOT_HOOK
from actors.routing import transformer_layers

STEPS, SIZE = 6, 64
# each policy set up so that it prunes (or skips queries) within 6 steps on a 64x64 edit
POLICIES = {
    "full": {},
    "random": dict(ratio=0.5),
    "tokendrop": dict(omega=0.0, full_steps=1),
    "topi": dict(layers="all", exempt_layers=1, interval=3),                    # anchors (forced) at 0 and 3
    "sparse_context": dict(strategy="attention", keep=0.5, warmup_steps=2),     # attention stats at step 1
    "spotedit": dict(tau=1.5, selector="l2", initial_steps=2, reset_steps=[4]),  # partial steps 2, 3, 5
    # partial steps 1-5 on a quarter of the 4x4 tokens; the edit's cache instead of its own
    "focus": dict(budget=0.25, margin=0, reference_margin=0, cache="none"),
    # partial steps 2, 3, 5 (eta 0: about half the tokens edited on the tiny models); the edit's cache
    "regione": dict(eta=0.0, erosion_dilation=False, warmup_steps=2, post_steps=0, refresh_steps=[4],
                    velocity_cache=False),
}
NEVER = {"first-block": "first-block:threshold=0", "magcache": "magcache:threshold=0",
         "taylorseer": "taylorseer:interval=1", "velocity-decay": "velocity-decay:delta=0,gamma=0.9"}
ALWAYS = {"first-block": "first-block:threshold=1e6", "magcache": "magcache:threshold=1e6,retention_ratio=0",
          "taylorseer": "taylorseer:interval=2,warmup=0",   # computes steps 0, 1, 3, 5; predicts 2 and 4
          "velocity-decay": "velocity-decay:delta=1,gamma=0.5"}   # every call after the first (and forced)


def test_policies_cover_the_registry():
    assert set(POLICIES) == set(policies.REGISTRY)


@pytest.fixture(scope="module")
def image():
    from conftest import make_image
    return make_image(SIZE, SIZE, seed=3)


@pytest.fixture(scope="module")
def alone():
    return {}   # (family, policy) -> the policy's edit without a cache, shared by the parametrized tests


def _pipe(family, flux_pipe, qwen_pipe):
    return flux_pipe if family == "flux" else qwen_pipe


def _edit(pipe, policy, image, cache=None, **kw):
    return actors.Editor(pipe, policies.make(policy, **POLICIES[policy])).edit(
        image, "make the circle red", seed=1, steps=STEPS, height=SIZE, width=SIZE, cache=cache, **kw)


@pytest.mark.parametrize("family", ["flux", "qwen"])
@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("cache", sorted(NEVER))
def test_every_cache_composes_with_every_policy(family, policy, cache, flux_pipe, qwen_pipe, image, alone):
    pipe = _pipe(family, flux_pipe, qwen_pipe)
    if (family, policy) not in alone:
        alone[family, policy] = _edit(pipe, policy, image)
    base = alone[family, policy]
    branches = ["cond"] if family == "flux" else ["cond", "uncond"]   # tiny Qwen: true CFG at guidance 4.0

    never = _edit(pipe, policy, image, NEVER[cache])
    assert np.array_equal(never.pixels, base.pixels), "a cache that never skips must equal the policy alone"
    assert torch.equal(never.latents, base.latents)
    assert [s.kept for s in never.trace] == [s.kept for s in base.trace]
    assert never.cache_skipped_calls == {b: 0 for b in branches}
    assert never.cache_calls == {b: STEPS for b in branches}

    often = _edit(pipe, policy, image, ALWAYS[cache])
    assert np.isfinite(often.pixels).all()
    assert [s.kept for s in often.trace] == [s.kept for s in base.trace] or policy == "tokendrop"
    skipped = often.cache_skipped_calls
    assert set(skipped) == set(branches) and all(n > 0 for n in skipped.values()), skipped
    for step in often.trace:
        assert [c.branch for c in step.cache_calls] == branches
        for c in step.cache_calls:
            assert not (c.forced and c.skipped), "a call the policy needs is never skipped"
            if c.skipped:
                assert c.skipped_blocks == (often.num_layers - 1 if cache == "first-block" else often.num_layers)
    assert often.cache_skipped_blocks == {b: sum(c.skipped_blocks for s in often.trace for c in s.cache_calls
                                                 if c.branch == b) for b in branches}
    row = often.cache_columns()
    assert row["cache"] == cache and row["cache_skipped_calls"] == sum(skipped.values())
    assert row["cache_skipped_calls_cond"] == skipped["cond"]
    assert row["cache_skipped_calls_uncond"] == skipped.get("uncond", 0)
    _no_hooks_left(pipe)


def _no_hooks_left(pipe):
    t = pipe.transformer
    for module in [t, *transformer_layers(t)]:
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None:
            assert ROOT_HOOK not in registry.hooks and BLOCK_HOOK not in registry.hooks


def test_forced_calls_are_the_policys_anchor_and_full_steps(flux_pipe, image):
    topi = _edit(flux_pipe, "topi", image, ALWAYS["first-block"])
    assert [s.cache_calls[0].forced for s in topi.trace] == [True, False, False, True, False, False]
    spot = _edit(flux_pipe, "spotedit", image, ALWAYS["taylorseer"])
    full_steps = [s.active is None for s in spot.trace]
    assert [s.cache_calls[0].forced for s in spot.trace] == full_steps
    assert not any(s.cache_calls[0].skipped for s in spot.trace if s.active is None)


@pytest.mark.parametrize("cache, skips_at", [("first-block:threshold=1e6,warmup=0", 1),
                                             ("magcache:threshold=1e6,retention_ratio=0", 1),
                                             ("taylorseer:interval=2,warmup=0", 2)])
def test_cfg_branches_keep_separate_state(cache, skips_at, qwen_pipe, image):
    """The uncond call of step 0 has nothing of its own to reuse: with a shared state it would reuse the cond
    call's residual (first-block, magcache) or Taylor factors (taylorseer, whose schedule would skip step 0)
    and be skipped."""
    r = actors.Editor(qwen_pipe, policies.make("full")).edit(image, "make it red", steps=4, height=SIZE, width=SIZE,
                                                            guidance_scale=4.0, cache=cache)
    first = r.trace[0].cache_calls
    assert [c.branch for c in first] == ["cond", "uncond"]
    assert not any(c.skipped for c in first)
    assert all(c.skipped for c in r.trace[skips_at].cache_calls)
    # without true CFG there is one branch
    single = actors.Editor(qwen_pipe, policies.make("full")).edit(image, "make it red", steps=2, height=SIZE,
                                                                 width=SIZE, guidance_scale=1.0, cache=cache)
    assert single.cache_calls == {"cond": 2}


def test_first_block_measures_noisy_rows_only_when_the_kept_set_changes(flux_pipe, image):
    """Random drop changes which source tokens enter at every step (and TokenDrop how many): the decision is
    the relative change of the first block's residual on the noisy rows, finite at every step after the first."""
    for policy in ("random", "tokendrop"):
        r = _edit(flux_pipe, policy, image, "first-block:threshold=0")
        measures = [s.cache_calls[0].measure for s in r.trace]
        assert measures[0] is None and all(np.isfinite(m) and m > 0 for m in measures[1:]), measures


def test_a_threshold_between_the_measures_skips_exactly_those_below(flux_pipe, image):
    probe = _edit(flux_pipe, "random", image, "first-block:threshold=0")
    measures = [s.cache_calls[0].measure for s in probe.trace[1:]]
    threshold = float(np.median(measures))
    r = _edit(flux_pipe, "random", image, f"first-block:threshold={threshold},max_skips=1")
    # up to the first skip the measures are the same (same computations); the first step below skips
    first_below = next(i for i, m in enumerate(measures, 1) if m < threshold)
    assert [s.cache_calls[0].skipped for s in r.trace[:first_below + 1]] == [False] * first_below + [True]


def test_hooks_removed_after_a_failed_edit(flux_pipe, image):
    forward = flux_pipe.transformer.forward

    class Boom(Exception):
        pass

    def fail(_):
        raise Boom()

    with pytest.raises(Boom):
        actors.Editor(flux_pipe, policies.make("full")).edit(image, "x", steps=2, height=SIZE, width=SIZE,
                                                             cache="first-block", on_step=fail)
    _no_hooks_left(flux_pipe)
    assert flux_pipe.transformer.forward.__func__ is forward.__func__ if hasattr(forward, "__func__") else True


def test_magcache_calibration_reports_ratios_per_branch(qwen_pipe, image):
    r = actors.Editor(qwen_pipe, policies.make("full")).edit(image, "x", steps=4, height=SIZE, width=SIZE,
                                                            cache="magcache:calibrate=true")
    ratios = r.cache_summary["mag_ratios"]
    assert set(ratios) == {"cond", "uncond"} and all(len(v) == 4 and v[0] == 1.0 for v in ratios.values())
    assert r.cache_skipped_calls == {"cond": 0, "uncond": 0}
    again = caches.parse({"name": "magcache", "ratios": ratios["cond"], "threshold": 0.5})
    assert again.params()["ratios"] == pytest.approx(ratios["cond"])
    assert any("FLUX.1-dev" in n for n in actors.Editor(qwen_pipe, policies.make("full")).edit(
        image, "x", steps=2, height=SIZE, width=SIZE, cache="magcache").notes)


def test_specs_parse_validate_and_round_trip():
    spec = caches.parse("first-block:threshold=0.1,warmup=2")
    assert spec.params() == {"threshold": 0.1, "warmup": 2, "max_skips": None}
    assert caches.parse(spec.label()) == spec
    assert caches.parse("taylorseer").label() == "taylorseer"
    assert caches.parse("magcache:ratios=[1.0;1.1;0.9]").ratios == [1.0, 1.1, 0.9]
    assert caches.parse(None) is None and caches.parse("none") is None
    assert set(caches.names()) >= {"first-block", "taylorseer", "magcache"}
    for bad, words in [("teacache", "accepted: first-block, magcache, taylorseer"),
                       ("first-block:thresh=0.1", "has no parameter 'thresh'; accepted: threshold"),
                       ("first-block:threshold=-1", "'threshold' must be >= 0"),
                       ("first-block:threshold=yes", "threshold"),
                       ("taylorseer:interval=0", "'interval' must be >= 1"),
                       ("taylorseer:warmup=4,stop=2", "'stop' (2) must be >= warmup (4)"),
                       ("magcache:ratios=dev", "'ratios' must be 'flux' or a list"),
                       ("first-block:threshold", "expected NAME:key=value")]:
        with pytest.raises(caches.CacheError, match=None) as err:
            caches.parse(bad)
        assert words in str(err.value), (bad, str(err.value))
    assert caches.make("first-block", threshold=0).never_skips and caches.make("taylorseer", interval=1).never_skips


def _cli(*args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "jobs.cli", "edit", *args], capture_output=True, text=True,
                          timeout=600)


def test_cli_edit_with_a_cache_reports_its_skips(tmp_path):
    import json

    from conftest import make_image
    from jobs import edit

    assert set(edit.CACHE_NAMES) == set(caches.names())
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    make_image(64, 64).save(src)
    proc = _cli("--model", "tiny-flux-kontext", "--policy", "random", "--cache", "first-block:threshold=1e6",
                "--image", str(src), "--instruction", "make it red", "--out", str(out), "--steps", "3",
                "--size", "64x64")
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["cache"]["name"] == "first-block" and line["cache"]["threshold"] == 1e6
    assert line["cache_skipped_calls"] == {"cond": 2} and line["cache_skipped_blocks"] == {"cond": 6}


def test_cli_refuses_a_bad_cache_before_the_model_loads(tmp_path):
    from conftest import make_image

    src = tmp_path / "in.png"
    make_image(64, 64).save(src)
    for spec, words in [("magcache:threshold=-2", "'threshold' must be >= 0")]:   # more: test_specs_parse...
        proc = _cli("--model", "flux-kontext", "--cache", spec, "--image", str(src), "--instruction", "x",
                    "--out", str(tmp_path / "o.png"))
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr
        assert "needs --model-path" not in proc.stderr   # the model loader was never reached


def test_flop_model_counts_skipped_blocks_and_calls(flux_pipe, qwen_pipe, image):
    import costs
    from costs import flops
    from bench.speed import trace_rows
    from bench.summary import _Step

    kontext, text = costs.real("FLUX.1-Kontext-dev").arch, costs.real("FLUX.1-Kontext-dev").text()
    full = _edit(flux_pipe, "full", image)
    assert flops.predicted_speedup(kontext, full.trace, text) == pytest.approx(1.0)
    speedups = {}
    for name in ("first-block", "magcache", "taylorseer"):
        r = _edit(flux_pipe, "full", image, ALWAYS[name])
        skipped = r.cache_skipped_calls["cond"]
        speedups[name] = flops.predicted_speedup(kontext, r.trace, text)
        # the JSON rows of the benchmark price the same
        assert flops.predicted_speedup(kontext, [_Step(row) for row in trace_rows(r.trace)], text) == \
            pytest.approx(speedups[name])
        assert 1.0 < speedups[name] <= STEPS / (STEPS - skipped) + 1e-9, (name, speedups[name])
    # taylorseer runs nothing in a skipped call: exactly steps / computed calls
    assert speedups["taylorseer"] == pytest.approx(STEPS / (STEPS - 2))
    # one Kontext block and the embedders/head are tiny against 57 blocks: first-block is close to the ideal
    fb = _edit(flux_pipe, "full", image, ALWAYS["first-block"])
    assert speedups["first-block"] > 0.9 * STEPS / (STEPS - fb.cache_skipped_calls["cond"])
    # per CFG branch: Qwen's two calls per step are priced each with its own skips
    qwen, qtext = costs.real("Qwen-Image-Edit").arch, costs.real("Qwen-Image-Edit").text()
    r = actors.Editor(qwen_pipe, policies.make("full")).edit(image, "x", steps=4, height=SIZE, width=SIZE,
                                                            cache="first-block:threshold=1e6")
    one = flops.call_flops(qwen, qtext[0], 16, 16).total
    skipped_one = flops.call_flops(qwen, qtext[0], 16, 16, skipped_from=1).total
    assert skipped_one < one / 30
    step = r.trace[1]
    assert [c.skipped_from for c in step.cache_calls] == [1, 1]
    assert flops.step_flops(qwen, step, qtext).total == pytest.approx(
        sum(flops.call_flops(qwen, t, 16, 16, skipped_from=1).total for t in qtext))


def test_cache_comparison_table_runs_on_the_toy_model():
    from actors import peers
    from studies.cache import compare as study

    configs = ("full|", "full|taylorseer:interval=2,warmup=1", "tokendrop[omega=0]|first-block:threshold=1e6")
    if peers.available()["cache-dit"] is None:
        configs += ("peer:cache-dit[warmup=1;threshold=1e6]|",)
    rows = study.compare(configs=configs, steps=4, records=1)
    by = {r["config"]: r for r in rows}
    assert by["full|"]["psnr_full"] == float("inf") and by["full|"]["flop_speedup"] == pytest.approx(1.0)
    assert by["full|taylorseer:interval=2,warmup=1"]["skipped"] == 2   # computes 0 (warmup) and 2, predicts 1, 3
    assert by["full|taylorseer:interval=2,warmup=1"]["flop_speedup"] == pytest.approx(2.0)
    assert by["tokendrop[omega=0]|first-block:threshold=1e6"]["skipped"] == 3
    assert all(np.isfinite(r["psnr_target"]) for r in rows)
    assert "| full|taylorseer:interval=2,warmup=1 | 2.0 |" in study.table(rows, 4)


@pytest.mark.parametrize("family", ["flux", "qwen"])
@pytest.mark.parametrize("ours, theirs", [
    ("magcache:threshold=0.5,retention_ratio=0.2,max_skip_steps=2",
     lambda steps: __import__("diffusers").hooks.MagCacheConfig(
         threshold=0.5, retention_ratio=0.2, max_skip_steps=2, num_inference_steps=steps,
         mag_ratios=__import__("diffusers").hooks.mag_cache.FLUX_MAG_RATIOS)),
    ("taylorseer:interval=2,warmup=1,order=1",
     lambda steps: __import__("diffusers").hooks.TaylorSeerCacheConfig(
         cache_interval=2, disable_cache_before_step=1, max_order=1, use_lite_mode=True,
         taylor_factors_dtype=torch.float32)),
])
def test_equals_diffusers_own_hooks_when_nothing_is_pruned(family, ours, theirs, flux_pipe, qwen_pipe, image):
    """Where diffusers' hooks are valid (policy `full`: the token set never changes), our noisy-row versions of
    MagCache and TaylorSeer (lite) give the same edit as diffusers' own, enabled on the same transformer."""
    pipe = _pipe(family, flux_pipe, qwen_pipe)
    mine = _edit(pipe, "full", image, ours)
    assert sum(mine.cache_skipped_calls.values()) > 0
    pipe.transformer.enable_cache(theirs(STEPS))
    try:
        reference = _edit(pipe, "full", image)
    finally:
        pipe.transformer.disable_cache()
    assert np.array_equal(mine.pixels, reference.pixels)
