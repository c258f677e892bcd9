"""Shape bucketing (actors.shape_buckets) and compile-friendly blocks (actors.compiled_blocks, bench.dynamo_counts)."""
import numpy as np
import pytest
import torch

import policies
from actors.mechanisms import StepCall
from actors.shape_buckets import BucketError, ShapeBuckets, ShapeBucketing, round_up, seeded_rank, widen
from policies import Plan, RunInfo, Seen, Step


def _run(seed=0, grid=(4, 4)):
    return RunInfo(family="flux", noisy_grid=grid, source_grids=(grid,), steps=8, sigmas=torch.linspace(1, 0, 9),
                   seed=seed, device=torch.device("cpu"), paper={"tokendrop": {"omega": 0.2, "full_steps": 1}})


def test_round_up():
    assert [round_up(c, 16, 4) for c in (0, 1, 4, 5, 13, 16)] == [0, 4, 4, 8, 16, 16]
    assert round_up(5, 16, 0) == 5
    assert round_up(15, 16, 8) == 16   # capped at every token


@pytest.mark.parametrize("bad", [-1, "0%", "120%", "abc", True, 1.5, "x%"])
def test_bad_buckets_are_refused_with_a_reason(bad):
    with pytest.raises(BucketError, match="bucket"):
        ShapeBuckets(bucket=bad)


def test_bucket_sizes():
    assert not ShapeBuckets().on and ShapeBuckets().label() == "off"
    assert ShapeBuckets(bucket="25%").size(16) == 4 and ShapeBuckets(bucket="25%").size(4096) == 1024
    assert ShapeBuckets(bucket="8").size(16) == 8
    with pytest.raises(BucketError):
        ShapeBuckets(bucket=4, other=1)


def test_widen_adds_the_next_best_by_rank():
    mask = torch.tensor([True, False, False, False, True, False])
    rank = torch.tensor([0.0, 5.0, 1.0, 3.0, 0.0, 3.0])
    out = widen(mask, rank, 4)
    assert out.tolist() == [True, True, False, True, True, False]   # 5.0, then the first 3.0 (token order)
    assert widen(mask, rank, 2) is mask                            # already a multiple


def test_seeded_rank_repeats_per_seed():
    assert torch.equal(seeded_rank(10, 3, torch.device("cpu")), seeded_rank(10, 3, torch.device("cpu")))
    assert not torch.equal(seeded_rank(10, 3, torch.device("cpu")), seeded_rank(10, 4, torch.device("cpu")))


def test_mechanism_rounds_the_plan_every_other_mechanism_reads():
    keep = torch.zeros(16, dtype=torch.bool)
    keep[[0, 1, 2, 9, 10]] = True
    rank = torch.arange(16, dtype=torch.float32)   # higher index = wanted more
    active = torch.zeros(16, dtype=torch.bool)
    active[:3] = True
    plan = Plan(keep_source=keep, source_rank=rank, active_noisy=active)
    call = StepCall(plan=plan, kept=torch.nonzero(keep).flatten(), input_index=torch.nonzero(keep).flatten(), index=3)
    mech = ShapeBucketing(ShapeBuckets(bucket="25%"), _run())
    mech.before_call(call)
    assert call.kept.tolist() == [0, 1, 2, 9, 10, 13, 14, 15]   # 5 -> 8 with the three best-ranked
    assert torch.equal(call.input_index, call.kept)
    assert int(call.plan.active_noisy.sum()) == 4                # the seeded order adds one
    assert plan.keep_source.sum() == 5                           # the policy's own plan is left as it was
    assert "3 token(s) added" not in mech.result_notes()[0] and "4 token(s) added" in mech.result_notes()[0]
    full = StepCall(plan=Plan(), kept=None, input_index=None, index=0)
    mech.before_call(full)
    assert full.plan.keep_source is None and full.kept is None


def test_policies_rank_by_their_own_scores():
    run = _run()
    rnd = policies.make("random", ratio=0.5).start(run)
    plan = rnd.plan(Step(0, 1.0, 0.9))
    kept_rank = plan.source_rank[plan.keep_source]
    assert kept_rank.min() > plan.source_rank[~plan.keep_source].max()   # kept = the first drawn
    # the mask itself is drawn as before (one permutation per step)
    g = torch.Generator("cpu").manual_seed(run.seed * 1_000_003)
    expected = torch.zeros(16, dtype=torch.bool)
    expected[torch.randperm(16, generator=g)[:8]] = True
    assert torch.equal(plan.keep_source, expected)
    td = policies.make("tokendrop", full_steps=1, kernel=3, omega=0.0).start(_run(grid=(8, 8)))
    x0 = torch.zeros(8, 8, 4)
    x0[:3, :3] = 3.0
    x0 = x0.reshape(64, 4)
    td.observe(Step(0, 1.0, 0.9), Seen(x0=x0, source=torch.zeros(64, 4), velocity=x0))
    plan = td.plan(Step(1, 0.9, 0.8))
    keep, rank = plan.keep_source, plan.source_rank   # what the threshold cut is what ranks the rest
    assert 0 < int(keep.sum()) < 64 and rank[keep].min() > rank[~keep].max()


@pytest.fixture(scope="module")
def shallow_and_deep():
    from bench.dynamo_counts import DEPTH, SHALLOWER, build_pipe
    # two blocks of each class at least: the first block of a class recompiles once for its input's layout
    return build_pipe(SHALLOWER), build_pipe(DEPTH)


def test_bucketing_off_or_one_token_changes_nothing(shallow_and_deep):
    from actors.editor import Editor
    from bench.dynamo_counts import make_policy
    from bench.speed import bench_image
    pipe = shallow_and_deep[0]
    out = [Editor(pipe, make_policy("tokendrop:full_steps=1"), bucket=ShapeBuckets(bucket=b)).edit(
        bench_image(64), "make it red", steps=4, height=64, width=64).pixels for b in (0, 1)]
    np.testing.assert_array_equal(out[0], out[1])


@pytest.mark.slow
@pytest.mark.parametrize("label", ["forced-spotedit:active=0.3", "forced-topi:keep=0.5,from_layer=1", "tokendrop"])
def test_compiled_blocks_recompile_no_more_with_depth_and_buckets_bound_shapes(shallow_and_deep, label):
    """torch.compile(dynamic=True, backend="eager") on each block's own forward: a model 3 blocks deeper compiles
    no more often (no guard tells blocks apart), and with 25 % buckets at most 4 kept / active counts occur."""
    from bench.dynamo_counts import count_edit
    shallow, deep = (count_edit(pipe, label, 0, steps=10) for pipe in shallow_and_deep)
    assert deep.recompiles == shallow.recompiles, (shallow.reasons, deep.reasons)
    on = count_edit(shallow_and_deep[0], label, "25%", steps=28, mode=None)
    assert on.kept_shapes <= 4 and on.active_shapes <= 4


def test_an_edit_and_a_run_take_a_bucket_and_record_it(flux_pipe, image_factory):
    import actors
    import policies
    from jobs.preflight import check_run
    from pipeline.config import expand_run, parse_config

    image = image_factory(64, 64, seed=2)
    r = actors.Editor(flux_pipe, policies.make("random", ratio=0.3), bucket="50%").edit(
        image, "make it red", seed=0, steps=3, height=64, width=64)
    assert r.shape_bucket == "50%" and {s.kept for s in r.trace} == {16}   # 11 of 16 rounded up to 2 x 8
    off = actors.Editor(flux_pipe, policies.make("random", ratio=0.3)).edit(
        image, "make it red", seed=0, steps=3, height=64, width=64)
    assert off.shape_bucket == "off" and {s.kept for s in off.trace} == {11}   # 16 - ⌈0.3·16⌉: not a multiple of 8

    def run(bucket):
        return expand_run(parse_config({"input": "x.jsonl", "output": "out", "policies": [{"name": "random"}],
                                        "models": [{"name": "tiny-flux-kontext", "options": {"bucket": bucket}}]}))

    check_run(run("25%"))
    with pytest.raises(ValueError, match="options.bucket"):
        check_run(run("150%"))
