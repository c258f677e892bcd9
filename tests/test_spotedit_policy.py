"""SpotEdit's policy alone (no model): α(t), reset schedule, dilation, plans from a given scorer."""
import math

import pytest
import torch

import policies
from actors.models import family as family_named
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
                  device=torch.device("cpu"), token_scores=lambda x0, metric: scores, paper=family_named(family).paper)
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


def test_alpha_paper_is_recursive_cos2_and_official_is_the_static_cache_read_from_it():
    from policies.spotedit import official_alpha

    assert abs(official_alpha(0.5) - fusion_alpha(0.0005)) < 1e-18
    assert all(official_alpha(s) >= 1 - 2.5e-6 for s in (0.0, 0.3, 1.0))   # α ≈ 1: the cache as it is
    scores = torch.tensor([0.1, 0.2, 0.3, 0.05, 0.5, 0.2])
    seen = Seen(x0=torch.zeros(6, 4), source=torch.zeros(6, 4), velocity=torch.zeros(6, 4))
    for alpha, recursive in (("paper", True), ("official", False)):
        run, steps = _run(policies.make("spotedit", tau=0.2, initial_steps=1, reset_steps=[], alpha=alpha), scores)
        run.plan(steps[0]), run.observe(steps[0], seen)
        context = run.plan(steps[1]).context
        expected = fusion_alpha(steps[1].sigma) if alpha == "paper" else official_alpha(steps[1].sigma)
        assert context.alpha == expected and context.recursive is recursive
        assert run.applied()["alpha"] == alpha
    with pytest.raises(policies.PolicyError, match="alpha"):
        policies.make("spotedit", alpha="cosine")


def test_official_alpha_blends_from_the_cache_without_writing_the_blend_back():
    from actors.spot_attention import SpotCall, SpotKV

    n, s = 3, 3
    kv = SpotKV(num_noisy=n, num_source=s, key_rotary=None)
    k, v = torch.randn(1, n + s, 1, 2), torch.randn(1, n + s, 1, 2)
    kv.assemble(0, k, v)   # a full call fills the cache
    cached = kv.layer(0).noisy_k.clone()
    active = torch.tensor([1])
    k_part, v_part = torch.randn(1, 1 + s, 1, 2), torch.randn(1, 1 + s, 1, 2)
    for recursive in (False, False):
        kv.call = SpotCall(active=active, source_queries=True, noisy_context=True, alpha=0.5, recursive=recursive)
        keys, _, _ = kv.assemble(0, k_part, v_part)
        blended = 0.5 * cached + 0.5 * k_part[:, 1:]
        assert torch.allclose(keys[:, [0, 2]], blended[:, [0, 2]])   # from the cache each call
        assert torch.equal(keys[:, 1], k_part[:, 0])                   # the edited token's own K
    assert torch.equal(kv.layer(0).noisy_k[:, [0, 2]], cached[:, [0, 2]])   # the cache is not blended
    kv.call = SpotCall(active=active, source_queries=True, noisy_context=True, alpha=0.5, recursive=True)
    kv.assemble(0, k_part, v_part)
    assert torch.allclose(kv.layer(0).noisy_k[:, [0, 2]], (0.5 * cached + 0.5 * k_part[:, 1:])[:, [0, 2]])


def test_tau_unset_is_the_official_value_of_the_family():
    scores = torch.tensor([0.1, 0.16, 0.3, 0.05, 0.5, 0.2])
    seen = Seen(x0=torch.zeros(6, 4), source=torch.zeros(6, 4), velocity=torch.zeros(6, 4))
    for family, tau in (("flux", 0.2), ("qwen", 0.15)):
        run, steps = _run(policies.make("spotedit", initial_steps=1, reset_steps=[], dilate=0), scores, family=family)
        assert run.applied()["tau"] == tau
        run.plan(steps[0]), run.observe(steps[0], seen)
        assert torch.equal(run.plan(steps[1]).active_noisy, scores > tau)
    run, _ = _run(policies.make("spotedit", tau=0.3), scores, family="qwen")
    assert run.applied()["tau"] == 0.3
