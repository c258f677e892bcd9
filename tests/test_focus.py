"""`focus`: the region decision, frozen tokens, reference keys, its cache on the active tokens, and the settings
that must equal `full` or the policy without its cache bit for bit, on both tiny families."""
import numpy as np
import pytest
import torch

import actors
import policies
from policies import RunInfo, Seen, Step
from actors.models import family
from policies.focus import grow

STEPS, SIZE = 6, 128   # 8x8 tokens


def _run(scores: torch.Tensor, steps: int = 10, **params) -> policies.PolicyRun:
    info = RunInfo(family="flux", noisy_grid=(4, 4), source_grids=((4, 4),), steps=steps,
                   sigmas=torch.linspace(1, 0, steps + 1), seed=0, device=torch.device("cpu"),
                   token_scores=lambda x0, metric: scores, paper=family("flux").paper)
    return policies.make("focus", **params).start(info)


def _seen() -> Seen:
    return Seen(x0=torch.zeros(16, 4), source=torch.zeros(16, 4), velocity=torch.zeros(16, 4))


def _steps(run: policies.PolicyRun, steps: int = 10) -> list:
    plans = []
    for i in range(steps):
        step = Step(i, 1 - i / steps, 1 - (i + 1) / steps)
        plans.append(run.plan(step))
        run.observe(step, _seen())
    return plans


def test_region_is_the_scores_above_tau_grown_by_the_margin():
    scores = torch.zeros(16)
    scores[5] = 1.0                                      # one token of the 4x4 grid changes
    plans = _steps(_run(scores, tau=0.5, margin=0, refresh=0, cache="none"))
    assert [p.active_noisy is None for p in plans] == [True] + [False] * 9   # warm-up: round(0.1 * 10) = 1 step
    assert torch.equal(plans[1].active_noisy, scores > 0.5) and plans[1].keep_source is None
    grown = _steps(_run(scores, tau=0.5, margin=1, refresh=0, cache="none"))[1].active_noisy
    assert torch.equal(grown, grow(scores > 0.5, (4, 4), 1)) and int(grown.sum()) == 9   # the 3x3 around it


def test_budget_refresh_final_and_global_edits():
    scores = torch.arange(16.0)
    plans = _steps(_run(scores, budget=0.25, margin=0, refresh=0.3, final=0.2, cache="none"))
    full = [p.active_noisy is None for p in plans]
    assert full == [True, False, False, False, True, False, False, True, True, True]   # refresh at 1 + 3
    assert torch.equal(plans[1].active_noisy, scores >= 12)        # the top quarter
    # an edit whose region exceeds max_active is global: its partial steps run in full
    assert all(p.active_noisy is None for p in _steps(_run(scores, budget=0.9, margin=0, refresh=0, cache="none")))


def test_reference_keys_are_the_region_grown_by_reference_margin():
    scores = torch.zeros(16)
    scores[0] = 1.0
    plan = _steps(_run(scores, tau=0.5, margin=0, reference_margin=1, refresh=0, cache="none"))[1]
    assert _steps(_run(scores, tau=0.5, margin=0, refresh=0, cache="none"))[1].keep_source is None   # default: all
    assert torch.equal(plan.keep_source, grow(scores > 0.5, (4, 4), 1)) and int(plan.keep_source.sum()) == 4


def test_tau_defaults_come_from_the_family_and_are_applied():
    run = _run(torch.zeros(16))
    assert run.applied()["tau"] == pytest.approx(0.07)   # RegionE's η = 0.93 for FLUX.1-Kontext
    with pytest.raises(policies.PolicyError, match="tau"):
        _run(torch.zeros(16), region="l2")               # no paper gives an l2 threshold


@pytest.fixture(scope="module")
def image():
    from conftest import make_image
    return make_image(SIZE, SIZE, seed=3)


def _edit(pipe, image, policy="focus", **params):
    return actors.Editor(pipe, policies.make(policy, **params)).edit(
        image, "make the circle red", seed=1, steps=STEPS, height=SIZE, width=SIZE)


@pytest.mark.parametrize("family", ["flux", "qwen"])
def test_never_skip_focus_equals_full(family, flux_pipe, qwen_pipe, image):
    pipe = flux_pipe if family == "flux" else qwen_pipe
    full = _edit(pipe, image, "full")
    # tau 0: every token is active (a global edit): no partial step, and no cache
    same = _edit(pipe, image, tau=0.0, cache="none")
    assert np.array_equal(same.pixels, full.pixels) and torch.equal(same.latents, full.latents)
    assert all(s.active is None for s in same.trace)


@pytest.mark.parametrize("family", ["flux", "qwen"])
def test_frozen_tokens_attend_through_the_cache_and_are_finished(family, flux_pipe, qwen_pipe, image):
    pipe = flux_pipe if family == "flux" else qwen_pipe
    r = _edit(pipe, image, budget=0.25, margin=0, reference_margin=0, refresh=0, finish="source", cache="none")
    active = [s.active for s in r.trace]
    assert active[0] is None and active[1:] == [16] * (STEPS - 1)          # a quarter of 64 tokens
    # keys: every noisy token (the frozen ones from the cache) and the source tokens of the region alone
    assert [s.keys for s in r.trace[1:]] == [64 + 16] * (STEPS - 1)
    frozen = torch.from_numpy(~r.trace[-1].active_mask.flatten())
    assert torch.equal(r.latents[frozen], r.source_latents[frozen])       # pasted back from the source
    estimate = _edit(pipe, image, budget=0.25, margin=0, reference_margin=0, refresh=0, cache="none")
    assert not torch.equal(estimate.latents[frozen], estimate.source_latents[frozen])
    assert r.policy_summary["frozen"] == 48 and r.policy_params["warmup_steps"] == 1


@pytest.mark.parametrize("family", ["flux", "qwen"])
def test_its_cache_skips_partial_steps_only_and_never_skip_equals_no_cache(family, flux_pipe, qwen_pipe, image):
    pipe = flux_pipe if family == "flux" else qwen_pipe
    base = _edit(pipe, image, budget=0.25, margin=0, refresh=0, cache="none")
    never = _edit(pipe, image, budget=0.25, margin=0, refresh=0, cache="first-block:threshold=0")
    assert torch.equal(never.latents, base.latents)
    always = _edit(pipe, image, budget=0.25, margin=0, refresh=0, cache="first-block:threshold=1e6")
    for step in always.trace:
        for call in step.cache_calls:
            assert call.forced == (step.active is None) and call.skipped == (step.active is not None)
    assert always.cache_params["name"] == "first-block"
    # refreshes every 2 steps after the warm-up (3 and 5): the one a partial step follows is forced (it refills
    # the K/V cache); the last, which nothing follows, is the cache's to skip
    refreshed = _edit(pipe, image, budget=0.25, margin=0, refresh=0.34, cache="first-block:threshold=1e6")
    assert [s.active is None for s in refreshed.trace] == [True, False, False, True, False, True]
    assert [s.cache_calls[0].forced for s in refreshed.trace] == [True, False, False, True, False, False]
    assert refreshed.trace[-1].cache_calls[0].skipped


def test_cli_json_line_has_every_parameter_and_both_ideal_speedups(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import make_image
    make_image(SIZE, SIZE, seed=3).save(tmp_path / "in.png")
    out = subprocess.run([sys.executable, "-m", "jobs.cli", "edit", "--model", "tiny-flux-kontext", "--policy", "focus",
                          "--image", str(tmp_path / "in.png"), "--instruction", "make it red", "--steps", "4",
                          "--size", f"{SIZE}x{SIZE}", "--out", str(tmp_path / "o.png"), "--set", "budget=0.25", "--set", "margin=0"],
                         capture_output=True, text=True, check=True)
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"warmup", "region", "tau", "margin", "reference_margin", "refresh", "final", "max_active", "finish",
            "cache", "budget", "warmup_steps", "refresh_steps"} <= set(line["params"])
    assert line["flops_ideal_speedup"] > 1 and line["flops_ideal_speedup_real"] > line["flops_ideal_speedup"]
    assert line["cache"]["name"] == "taylorseer"


def test_on_a_global_edit_its_cache_still_skips(flux_pipe, image):
    """Full steps that fill no K/V cache for a partial step (here: every step, the region being everything) are
    the cache's to skip; the cache is focus's temporal reuse on global edits."""
    r = _edit(flux_pipe, image, tau=0.0, refresh=0, cache="first-block:threshold=1e6")
    assert all(s.active is None for s in r.trace)
    assert r.cache_skipped_calls == {"cond": STEPS - 1}
    assert [s.cache_calls[0].forced for s in r.trace] == [True] + [False] * (STEPS - 1)   # only the partition step


def test_a_global_edit_is_not_partitioned_again():
    run = _run(torch.arange(16.0), budget=0.9, margin=0, refresh=0.3, cache="none")
    plans = _steps(run)
    assert all(p.active_noisy is None for p in plans)
    assert [p.refreshes_context for p in plans] == [True] + [False] * 9   # only the first partition
    assert run.summary()["global"] and run.summary()["active_shares"] == [0.875]
