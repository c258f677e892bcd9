"""A run's actor pools (pipeline.pools): model entries share the GPUs at once in proportion to their estimated work,
each with at least one; with fewer GPUs than pools they take turns; what one card cannot hold goes, a whole
resolution group at a time, to a pool on the bigger card's custom resource, or is refused before the run."""
import sys
import time

import pytest
from manifest_helpers import write_manifest
from ray import cloudpickle

from costs import edit_cost
from jobs.preflight import check_run
from pipeline.config import expand_run, parse_config
from pipeline.pools import BIG, card_groups, plan_pools, split_gpus
from pipeline.records import utcnow
from pipeline.unit_stage import UnitActor, UnitEdit

cloudpickle.register_pickle_by_value(sys.modules[__name__])   # Ray's workers do not import tests/

TWO_MODELS = [{"name": "flux-kontext", "path": "/m/k"}, {"name": "qwen-image-edit", "path": "/m/q"}]


def _run(models=TWO_MODELS, policies=({"name": "full"}, {"name": "random", "ratio": 0.5}), sizes=(1024,),
         **actors):
    return expand_run(parse_config({"input": "x.jsonl", "output": "out", "models": list(models),
                                    "resolutions": list(sizes), "policies": list(policies),
                                    "actors": {"num_gpus": 1, **actors}}))


def test_gpus_are_split_in_proportion_to_the_work_with_at_least_one_each():
    assert split_gpus(8, [3.0, 1.0]) == [6, 2]
    assert split_gpus(2, [100.0, 1.0]) == [1, 1]   # the light pool is not starved
    assert split_gpus(7, [1.0, 1.0, 1.0]) in ([3, 2, 2], [2, 3, 2], [2, 2, 3])
    assert sum(split_gpus(256, [0.37, 0.21, 0.42])) == 256


def test_two_models_share_the_gpus_at_once_by_their_cost_model_work():
    run = _run(min_size=8, max_size=8)
    [wave] = plan_pools(run)   # one wave: both pools at once
    kontext, qwen = wave
    assert (kontext.name, qwen.name) == ("flux-kontext", "qwen-image-edit")
    assert kontext.actors.max_size + qwen.actors.max_size == 8 and min(p.actors.max_size for p in wave) >= 1
    # the cost model's FLOPs of each model's two configurations decide the shares
    work = {m: sum(edit_cost(m, 1024, 1024, c.steps, c.guidance_scale, keep=k).flops
                   for c, k in zip(run.of_model(m), (1.0, 0.5))) for m in ("flux-kontext", "qwen-image-edit")}
    share = work["qwen-image-edit"] / sum(work.values())
    assert qwen.work_share == pytest.approx(share, abs=1e-3) and share > 0.5   # Qwen: 50 steps, true CFG
    assert abs(qwen.actors.max_size - 8 * share) <= 1
    assert kontext.actors.min_size == kontext.actors.max_size   # a fixed share: nobody takes another's GPUs


def test_fewer_gpus_than_pools_or_sequential_pools_take_turns_with_all_gpus():
    waves = plan_pools(_run(min_size=1, max_size=1))
    assert [[p.name for p in w] for w in waves] == [["flux-kontext"], ["qwen-image-edit"]]
    assert all(w[0].actors.max_size == 1 for w in waves)
    waves = plan_pools(_run(min_size=2, max_size=6, pools="sequential"))
    assert len(waves) == 2 and all((w[0].actors.min_size, w[0].actors.max_size) == (2, 6) for w in waves)


def test_an_autoscaling_pool_keeps_its_range_in_proportion():
    kontext, qwen = plan_pools(_run(min_size=2, max_size=10))[0]
    assert (kontext.actors.min_size, qwen.actors.min_size) == (1, 1)
    assert kontext.actors.max_size + qwen.actors.max_size == 10


BIG_CARD = {"card_gb": 141, "resource": "big_card", "max_size": 2}
SPOT = ({"name": "full"}, {"name": "spotedit"})


def test_what_the_run_card_cannot_hold_goes_whole_to_the_big_card_pool():
    # Qwen-Image-Edit with SpotEdit's K/V buffers: 67.9 GiB at 1024² fits 80 GB, 104.7 GiB at 2048² does not
    run = _run(models=[TWO_MODELS[1]], policies=SPOT, sizes=(1024, 2048), min_size=4, max_size=4,
               big_card=BIG_CARD)
    check_run(run)   # no refusal: the 2048² group fits the 141 GB card
    standard, big = card_groups(run.configurations, run.config.actors)
    assert {c.width for c in standard} == {1024} and {c.width for c in big} == {2048}
    assert {c.policy for c in big} == {"full", "spotedit"}   # `full` moves with what it is paired with
    [wave] = plan_pools(run)
    assert [(p.name, p.actors.max_size, p.resources) for p in wave] == [
        ("qwen-image-edit", 4, {}), ("qwen-image-edit" + BIG, 2, {"big_card": 1.0})]


def test_an_edit_too_big_for_the_big_card_too_is_refused_before_the_run():
    run = _run(models=[TWO_MODELS[1]], policies=SPOT, sizes=(2048,), big_card={**BIG_CARD, "card_gb": 100})
    with pytest.raises(ValueError, match=r"104\.7 GiB .*card has 100 GiB.*actors.big_card"):
        check_run(run)


def test_the_big_card_pool_asks_ray_for_the_custom_resource(ray_session, tmp_path):
    from pipeline.graph import edit_actor, model_dataset

    run = _run(models=[TWO_MODELS[1]], policies=SPOT, sizes=(1024, 2048), big_card=BIG_CARD)
    run = expand_run(run.config.model_copy(update={"input": run.config.input.model_copy(
        update={"uri": str(tmp_path / "x.jsonl")})}))
    (tmp_path / "x.jsonl").write_text('{"id": "a", "image": "a.png", "instruction": "edit"}\n')
    asks = {}
    for pool in plan_pools(run)[0]:   # built, not run: the actor stage's Ray arguments
        ds = model_dataset(run.config, pool, {}, "r", edit_actor)
        op = ds._logical_plan.dag.input_dependencies[0]   # finish <- the actor stage
        asks[pool.name] = op.ray_remote_args.get("resources")
    assert asks == {"qwen-image-edit": None, "qwen-image-edit" + BIG: {"big_card": 1.0}}


class SlowActor(UnitActor):
    """Edits nothing, in 0.3 s: long enough that two pools that run at once overlap in time."""

    def edit(self, config, inputs, unit, budget):
        started = utcnow()
        time.sleep(0.3)
        row = self.ok_row(config, unit, started)
        row.update(runtime_s=0.3, loop_s=0.3)
        return UnitEdit(config, row, emit=True, image=inputs["source"])


def _slow(configs, cfg, run_id):
    return SlowActor, dict(configs={c.config_id: c.to_row() for c in configs}, run_id=run_id)


def test_two_model_pools_run_at_once_and_both_finish(ray_session, tmp_path):
    from pipeline.graph import run_ablation
    from pipeline.resume import read_results

    manifest = write_manifest(str(tmp_path / "in"), 6)
    cfg = parse_config({"input": manifest, "output": str(tmp_path / "out"), "resolutions": [64], "steps": 2,
                        "models": [{"name": "tiny-flux-kontext"}, {"name": "tiny-qwen-image-edit"}],
                        "policies": ["full", {"name": "random", "ratio": 0.5}], "metrics": {"compute": []},
                        "actors": {"num_gpus": 0, "num_cpus": 0.5, "min_size": 2, "max_size": 2},
                        "units": {"split": "none"}})
    summary = run_ablation(expand_run(cfg), factory=_slow)
    assert [[p["name"] for p in wave] for wave in summary["pools"]] == [["tiny-flux-kontext", "tiny-qwen-image-edit"]]
    assert [p["max_size"] for p in summary["pools"][0]] == [1, 1]
    rows = read_results(f"{tmp_path}/out/results").to_pandas()
    assert summary["ok"] == 24 and len(rows) == 24 and not rows.duplicated(["record_id", "config_id"]).any()
    spans = rows.groupby("model").agg(first=("started_at", "min"), last=("finished_at", "max"))
    # each model's 12 edits take >= 3.6 s on its one actor; at once, each starts before the other ends
    assert (spans["first"].max() < spans["last"].min()), spans


def test_the_dry_run_says_how_the_pools_share_the_gpus():
    from pipeline.dry_run import dry_run

    text, _ = dry_run(_run(min_size=8, max_size=8), records=10)
    assert "pools, at once: flux-kontext on 2-2 actor(s) (19% of the work), qwen-image-edit on 6-6 actor(s)" in text
    text, _ = dry_run(_run(max_size=1), records=10)
    assert "pools (turn 2), alone: qwen-image-edit on 1-1 actor(s)" in text


def test_units_waiting_for_the_pool_are_capped_by_count(ray_session, tmp_path, monkeypatch):
    # 40 records of tiny units ahead of one slow actor: without a count cap the cheap stages would queue all 40
    # (in the driver's memory: pipeline/unit_backlog.py); with it, what waits stays near 4 rounds of the pool
    from pipeline import unit_backlog
    from pipeline.graph import CPU_BATCH, run_ablation

    seen = []
    queued = unit_backlog.UnitBacklogCap.queued
    monkeypatch.setattr(unit_backlog.UnitBacklogCap, "queued",
                        lambda self, op: seen.append(queued(self, op)) or seen[-1])
    cfg = parse_config({"input": write_manifest(str(tmp_path / "in"), 40), "output": str(tmp_path / "out"),
                        "resolutions": [64], "steps": 2, "models": [{"name": "tiny-flux-kontext"}],
                        "policies": ["full"], "metrics": {"compute": []}, "units": {"split": "none"},
                        "actors": {"num_gpus": 0, "num_cpus": 0.5, "min_size": 1, "max_size": 1}})
    summary = run_ablation(expand_run(cfg), factory=_slow)
    assert summary["ok"] == 40
    counts = [c for c in seen if c is not None]
    assert counts and {cap for _, cap in counts} == {4}   # 1 actor x 1 unit in flight x 4 rounds
    assert max(n for n, _ in counts) >= 4                 # it held the stages back...
    # ...and near it: a block counted before the last repartition becomes CPU_BATCH blocks after it
    assert max(n for n, _ in counts) <= 4 * CPU_BATCH, max(counts)
