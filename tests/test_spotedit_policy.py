"""SpotEdit's policy alone (no model): α(t), reset schedule, dilation, plans from a given scorer."""
import math

import pytest
import torch

import policies
from policies.base import RunInfo, Seen, Step
from policies.spotedit import default_resets, dilate_edited, fusion_alpha


def test_alpha_values():
    assert fusion_alpha(0.0) == 1.0                       # clean end: the cache itself
    assert fusion_alpha(1.0) < 1e-30                      # pure noise: the source's K/V
    assert abs(fusion_alpha(0.5) - 0.5) < 1e-15
    assert abs(fusion_alpha(1 / 3) - 0.75) < 1e-15        # cos²(π/6)
    assert abs(fusion_alpha(2 / 3) - 0.25) < 1e-15        # cos²(π/3)
    ts = [i / 10 for i in range(11)]
    assert all(fusion_alpha(a) > fusion_alpha(b) for a, b in zip(ts, ts[1:]))


def test_reset_schedule_and_dilation():
    assert default_resets(50) == (13, 22, 31)             # the official code's schedule
    assert default_resets(28) == (7, 12, 17)
    unchanged = torch.ones(5, 5, dtype=torch.bool)
    unchanged[2, 2] = False
    grown = dilate_edited(unchanged.flatten(), (5, 5), 1).reshape(5, 5)
    assert (~grown).sum() == 9 and not grown[1:4, 1:4].any() and grown[0].all()
    assert torch.equal(dilate_edited(unchanged.flatten(), (5, 5), 0), unchanged.flatten())


def test_parameters_are_validated():
    with pytest.raises(policies.PolicyError, match="fusion"):
        policies.make("spotedit", fusion="blend")
    with pytest.raises(policies.PolicyError, match="selector"):
        policies.make("spotedit", selector="lpips")
    with pytest.raises(policies.PolicyError, match="reset_steps"):
        policies.make("spotedit", reset_steps=5)
    p = policies.make("spotedit", reset_steps=[9, 3, 3], condition_cache="false")
    assert p.params()["reset_steps"] == [3, 9] and p.needs.query_skip.source is False and p.needs.query_skip.noisy


def _run(policy, scores, steps=8, family="flux"):
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    run = RunInfo(family=family, noisy_grid=(2, 3), source_grids=((2, 3),), steps=steps, sigmas=sigmas, seed=0,
                  device=torch.device("cpu"), token_scores=lambda x0, metric: scores)
    return policy.start(run), [Step(i, float(sigmas[i]), float(sigmas[i + 1])) for i in range(steps)]


def test_plans_follow_initial_reset_and_threshold():
    scores = torch.tensor([0.1, 0.2, 0.3, 0.05, 0.5, 0.2])
    policy = policies.make("spotedit", tau=0.2, initial_steps=2, reset_steps=[5])
    run, steps = _run(policy, scores)
    seen = Seen(x0=torch.zeros(6, 4), source=torch.zeros(6, 4), velocity=torch.zeros(6, 4))
    plans = []
    for step in steps:
        plans.append(run.plan(step))
        run.observe(step, seen)
    full = [i for i, p in enumerate(plans) if p.active_noisy is None]
    assert full == [0, 1, 5]
    expected = scores > 0.2                               # score ≤ τ: non-edited, no query
    for i in (2, 3, 4, 6, 7):
        assert torch.equal(plans[i].active_noisy, expected)
        assert plans[i].context.noisy and plans[i].context.source
        assert plans[i].context.alpha == fusion_alpha(steps[i].sigma)
    assert torch.equal(run.replace_with_source(), ~expected)

    static, _ = _run(policies.make("spotedit", tau=0.2, initial_steps=2, fusion="static", reset_steps=[]), scores)
    naive, _ = _run(policies.make("spotedit", tau=0.2, initial_steps=2, fusion="none", condition_cache=False,
                                     reset_steps=[]), scores)
    for r in (static, naive):
        r.plan(steps[0]), r.observe(steps[0], seen), r.plan(steps[1]), r.observe(steps[1], seen)
    assert static.plan(steps[2]).context.alpha is None
    assert naive.plan(steps[2]).context == policies.base.CachedContext(noisy=False, source=False, alpha=None)


def test_nothing_under_tau_means_full_steps_and_no_replacement():
    run, steps = _run(policies.make("spotedit", tau=-1.0, initial_steps=1, reset_steps=[]),
                      torch.zeros(6) + 0.01)
    seen = Seen(x0=torch.zeros(6, 4), source=torch.zeros(6, 4), velocity=torch.zeros(6, 4))
    for step in steps:
        assert run.plan(step).active_noisy is None
        run.observe(step, seen)
    assert run.replace_with_source() is None
