"""Split units end to end on Ray (`pipeline.graph` with a stand-in actor that edits instantly, timed by
configuration): the tail records' configurations run in several units, every (record, configuration) row is
written exactly once, every variant carries `speedup_vs_full` paired on its own actor, each re-run `full` is
charged once (`pairing_rerun_s`, the summary's `extra_gpu_s_for_pairing`), and a resumed run writes only the
missing rows."""
import sys
from typing import Any, Mapping

from manifest_helpers import write_manifest
from ray import cloudpickle

from pipeline.config import expand_run, parse_config
from pipeline.configuration import Configuration
from pipeline.graph import run_ablation
from pipeline.records import utcnow
from pipeline.resume import read_results
from pipeline.unit_stage import UnitActor, UnitEdit

cloudpickle.register_pickle_by_value(sys.modules[__name__])   # Ray's workers do not import tests/
FULL_S, VARIANT_S = 2.0, 0.5
SOURCE = "random ratio=0.2"


class InstantActor(UnitActor):
    """Edits nothing: `full` takes FULL_S, every other configuration VARIANT_S (as rows say; no sleep)."""

    def edit(self, config: Configuration, inputs: dict[str, Any], unit: Mapping[str, Any],
             budget: list[int] | None) -> UnitEdit:
        row = self.ok_row(config, unit, utcnow())
        seconds = FULL_S if config.is_reference else VARIANT_S
        kept = list(budget) if budget else [round(100 * float(config.policy_params.get("ratio", 1.0)))] * 3
        row.update(runtime_s=seconds, loop_s=seconds, kept_per_step=kept)
        return UnitEdit(config, row, emit=True, image=inputs["source"], kept_per_step=kept)


def instant(configs, cfg, run_id):
    """The actor without the run's output: it cannot read `full` back, so it re-runs it (`pairing: rerun`)."""
    return InstantActor, dict(configs={c.config_id: c.to_row() for c in configs}, run_id=run_id)


def instant_read_back(configs, cfg, run_id):
    return InstantActor, dict(configs={c.config_id: c.to_row() for c in configs}, run_id=run_id,
                              output=cfg.output, storage=cfg.storage.model_dump(), pairing=cfg.units.pairing)


def _run(manifest, output, ratios, budget=True, units=None, factory=instant):
    policies = ["full", {"name": "random", "ratio": ratios}]
    policies += [{"name": "random", "budget_from": SOURCE}] if budget else []
    cfg = parse_config({"input": manifest, "output": output, "models": [{"name": "tiny-flux-kontext"}],
                        "policies": policies, "resolutions": [64], "steps": 3,
                        "actors": {"num_gpus": 0, "num_cpus": 0.5, "min_size": 1, "max_size": 2},
                        "metrics": {"compute": ["vs_full"]}, "units": units or {"split": 3, "records": 2}})
    run = expand_run(cfg)
    return run, run_ablation(run, factory=factory)


def _rows(output):
    return read_results(f"{output}/results").to_pandas()


def test_tail_records_split_rows_once_paired_and_the_pairing_counted(ray_session, tmp_path):
    manifest = write_manifest(str(tmp_path / "in"), 6)
    run, summary = _run(manifest, str(tmp_path / "out"), [0.2, 0.4, 0.6, 0.8])
    plan = summary["unit_plans"]["tiny-flux-kontext"]
    assert (plan["parts"], plan["tail"]) == (3, 2)
    rows = _rows(str(tmp_path / "out"))
    assert len(rows) == 6 * len(run.configurations) and not rows.duplicated(["record_id", "config_id"]).any()
    assert (rows["status"] == "ok").all()
    variants = rows[rows["policy"] != "full"]
    assert (variants["speedup_vs_full"] == FULL_S / VARIANT_S).all()       # paired in every unit
    assert variants["psnr_vs_full"].notna().all()                        # the in-memory reference too
    reruns = rows.dropna(subset=["pairing_rerun_s"])
    # r4 and r5 (the last 2) in 3 units each: 2 extra `full` edits per record, charged once each
    assert sorted(reruns["record_id"]) == ["r4", "r4", "r5", "r5"] and (reruns["pairing_rerun_s"] == FULL_S).all()
    assert summary["pairing_reruns"] == 4 and summary["extra_gpu_s_for_pairing"] == 4 * FULL_S
    split_actors = rows[rows["record_id"] == "r5"].groupby("actor")["config_id"].count()
    assert split_actors.sum() == len(run.configurations)
    matched = rows[rows["label"] == f"random budget_from={SOURCE}"]
    assert all(list(k) == [20, 20, 20] for k in matched["kept_per_step"])   # its source's counts, same unit


def test_a_resumed_split_run_writes_only_the_missing_rows(ray_session, tmp_path):
    manifest, output = write_manifest(str(tmp_path / "in"), 6), str(tmp_path / "out")
    first, _ = _run(manifest, output, [0.2, 0.4], budget=False)              # a partial grid first
    run, summary = _run(manifest, output, [0.2, 0.4, 0.6, 0.8])                # then the whole one
    assert summary["edited"] == 6 * (len(run.configurations) - len(first.configurations)) == summary["ok"]
    rows = _rows(output)
    assert len(rows) == 6 * len(run.configurations) and not rows.duplicated(["record_id", "config_id"]).any()
    again = rows[rows["run_id"] == rows.sort_values("finished_at")["run_id"].iloc[-1]]
    assert (again[again["policy"] != "full"]["speedup_vs_full"] == FULL_S / VARIANT_S).all()
    # `full` is written: every unit re-runs it, 1 per whole record and 3 per split one (its 3 missing blocks)
    assert summary["pairing_reruns"] == 4 * 1 + 2 * 3
    _, nothing = _run(manifest, output, [0.2, 0.4, 0.6, 0.8])
    assert nothing["edited"] == 0 and nothing["pairing_reruns"] == 0


def test_split_parts_read_full_back_instead_of_re_running_it(ray_session, tmp_path):
    """The first two (whole) records time `full` on both actors, so the split records' other parts read their
    `full` back: rows once, every variant paired and compared with `full`, and no re-run."""
    manifest, output = write_manifest(str(tmp_path / "in"), 6), str(tmp_path / "out")
    run, summary = _run(manifest, output, [0.2, 0.4, 0.6, 0.8], factory=instant_read_back)
    rows = _rows(output)
    assert len(rows) == 6 * len(run.configurations) and not rows.duplicated(["record_id", "config_id"]).any()
    variants = rows[rows["policy"] != "full"]
    assert (variants["speedup_vs_full"] == FULL_S / VARIANT_S).all() and variants["psnr_vs_full"].notna().all()
    split = variants[variants["record_id"].isin(["r4", "r5"])]
    charged = split.dropna(subset=["pairing_wait_s"])   # one row per part that read it back: 2 per record
    assert len(charged) == 4 and (charged["speedup_paired_on"] == "actor").all() and summary["pairing_reruns"] == 0
    assert set(split["speedup_paired_on"]) == {"unit", "actor"}   # the first part ran its own `full`
    assert (variants[~variants["record_id"].isin(["r4", "r5"])]["speedup_paired_on"] == "unit").all()
