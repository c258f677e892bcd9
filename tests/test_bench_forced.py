"""Forced plans (bench/forced.py): every mechanism really skips, at exactly the requested ratio, on both tiny
families; they are not shipped policies."""
import pytest

import actors
import policies
from bench import forced
from bench.speed import parse_policy

STEPS = 3


def _edit(pipe, image_factory, label):
    spec = parse_policy(label)
    policy = forced.make(spec.name, **spec.params)
    return actors.Editor(pipe, policy).edit(image_factory(64, 64), "x", steps=STEPS, height=64, width=64)


@pytest.mark.parametrize("family", ["flux", "qwen"])
def test_forced_plans_skip_at_the_requested_ratios(family, flux_pipe, qwen_pipe, image_factory):
    pipe = flux_pipe if family == "flux" else qwen_pipe
    gather = _edit(pipe, image_factory, "forced-gather:keep=0.25").trace
    assert all(s.kept == s.total // 4 and s.from_layer == 0 for s in gather)

    topi = _edit(pipe, image_factory, "forced-topi:keep=0.5,from_layer=1").trace
    assert all(s.kept == s.total // 2 and s.from_layer == 1 for s in topi)
    anchored = _edit(pipe, image_factory, "forced-topi:keep=0.5,from_layer=1,interval=2").trace
    assert [s.kept == s.total for s in anchored] == [True, False, True]   # anchors at 0 and 2
    assert anchored[1].kept == anchored[1].total // 2 and anchored[1].from_layer == 1

    for label in ("forced-spotedit:active=0.5", "forced-spotedit:active=0.25,full_steps=2,selector=true"):
        spot = _edit(pipe, image_factory, label)
        share, full = (0.5, 1) if "0.5" in label else (0.25, 2)
        assert all(s.active is None for s in spot.trace[:full])
        assert all(s.active == int(s.noisy * share) for s in spot.trace[full:])
        assert spot.policy_summary == {} and spot.trace[-1].kept == spot.trace[-1].total   # source from the cache


def test_forced_policies_are_not_shipped_and_errors_name_them(flux_pipe, image_factory):
    assert not set(forced.FORCED) & set(policies.REGISTRY)
    assert forced.make("random", ratio=0.5).name == "random"
    with pytest.raises(policies.PolicyError, match="forced-gather"):
        forced.make("forced-nothing")
    with pytest.raises(policies.PolicyError, match="parameter 'keep'"):
        forced.make("forced-gather", keep=2)
    with pytest.raises(policies.PolicyError, match="from_layer=5"):
        _edit(flux_pipe, image_factory, "forced-topi:from_layer=5")
