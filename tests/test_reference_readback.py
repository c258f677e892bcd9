"""Pairing by reading `full` back (`pipeline.reference_readback`, `units.pairing: read_back`), on the actor
frame alone (no Ray): the part of a split record that emits `full` runs it first and writes its picture at
once; another part reads that picture (the same pixels, so the same `*_vs_full` metrics) and pairs its
timings with its actor's latest `full` of the configuration; a missing picture is waited for at most one
`full` edit's time, then `full` is re-run and both costs are charged; an actor with no `full` timed yet, or
`pairing: rerun`, re-runs it."""
import os
from typing import Any, Mapping

import numpy as np
import pytest

from pipeline import storage as st
from pipeline.config import expand_run, parse_config
from pipeline.configuration import Configuration
from pipeline.finish_stage import finish_edit
from pipeline.records import utcnow
from pipeline.reference_readback import image_uri, read_back
from pipeline.scoring import StageMetrics, metric_settings
from pipeline.unit_stage import UnitActor, UnitEdit

FULL_S, VARIANT_S = 2.0, 0.5
WALL = 0.1   # wall seconds per row second: a missing reference is waited for FULL_S * WALL


class PaintActor(UnitActor):
    """`full` paints the source's inverse, a variant the source; counts the edits it runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ran: list[str] = []

    def to_wall(self, seconds: float) -> float:
        return seconds * WALL

    def edit(self, config: Configuration, inputs: dict[str, Any], unit: Mapping[str, Any],
             budget: list[int] | None) -> UnitEdit:
        self.ran.append(config.policy)
        row = self.ok_row(config, unit, utcnow())
        seconds = FULL_S if config.is_reference else VARIANT_S
        row.update(runtime_s=seconds, loop_s=seconds)
        image = 255 - inputs["source"] if config.is_reference else inputs["source"]
        return UnitEdit(config, row, emit=True, image=image)


@pytest.fixture
def grid(tmp_path):
    cfg = parse_config({"input": "m.jsonl", "output": str(tmp_path), "models": [{"name": "tiny-flux-kontext"}],
                        "policies": ["full", {"name": "random", "ratio": [0.3, 0.6]}], "resolutions": [64],
                        "steps": 3, "metrics": {"compute": ["vs_full"]}})
    configs = expand_run(cfg).configurations
    full = next(c for c in configs if c.is_reference)
    return {c.config_id: c.to_row() for c in configs}, full, [c for c in configs if not c.is_reference]


def _unit(rid, ids, parts):
    return {"id": rid, "category": "recolor", "instruction": "make it red", "config_ids": ids, "parts": parts}


INPUTS = {"source": np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5, "mask": None, "target": None}


def test_the_part_with_full_runs_it_first_and_writes_it_once(grid, tmp_path, monkeypatch):
    rows, full, (a, b) = grid
    actor = PaintActor(rows, "run", output=str(tmp_path))
    edits = actor.run_unit(_unit("r1", [b.config_id, full.config_id], 2), INPUTS)
    assert actor.ran[0] == "full" and edits[0].row["run_position"] == 0
    uri = image_uri(str(tmp_path), "images", full.config_id, "r1")
    assert edits[0].extra["output_uri"] == uri and os.path.exists(uri)
    writes = []
    monkeypatch.setattr(st, "write_bytes", lambda *args, **kw: writes.append(args[0]))
    row = finish_edit(edits[0], INPUTS, None, str(tmp_path), st.StorageConfig(),
                      StageMetrics("finish", metric_settings({"compute": []})))
    assert row["output_uri"] == uri and writes == []   # the finish stage does not write it again


def test_another_part_reads_full_back_with_the_same_metrics_and_pairs_on_its_actor(grid, tmp_path):
    rows, full, (a, b) = grid
    writer = PaintActor(rows, "run", output=str(tmp_path))
    anchor = writer.run_unit(_unit("r1", [full.config_id, b.config_id], 2), INPUTS)
    reader = PaintActor(rows, "run", output=str(tmp_path))
    reader.run_unit(_unit("r0", [full.config_id, a.config_id], 1), INPUTS)   # an earlier unit: full timed
    reader.ran.clear()
    edits = reader.run_unit(_unit("r1", [a.config_id], 2), INPUTS)
    assert reader.ran == ["random"]                                    # no re-run
    mine, ref = edits[0], edits[1]
    assert ref.extra["borrowed"] and np.array_equal(ref.image, anchor[0].image)
    assert mine.row["speedup_vs_full"] == FULL_S / VARIANT_S and mine.row["speedup_paired_on"] == "actor"
    assert mine.row["pairing_wait_s"] < 0.5 and mine.row["pairing_rerun_s"] is None   # the read only
    metrics = StageMetrics("finish", metric_settings({"compute": ["vs_full"]}))
    read = finish_edit(mine, INPUTS, ref, str(tmp_path), st.StorageConfig(), metrics)
    in_memory = finish_edit(UnitEdit(mine.config, dict(mine.row), True, image=mine.image), INPUTS, anchor[0],
                            str(tmp_path), st.StorageConfig(), metrics)
    assert read["psnr_vs_full"] == in_memory["psnr_vs_full"] and read["ssim_vs_full"] == in_memory["ssim_vs_full"]


def test_a_missing_reference_is_waited_for_one_full_edit_then_re_run(grid, tmp_path):
    rows, full, (a, _) = grid
    actor = PaintActor(rows, "run", output=str(tmp_path))
    actor.run_unit(_unit("r0", [full.config_id], 1), INPUTS)
    actor.ran.clear()
    edits = actor.run_unit(_unit("r9", [a.config_id], 3), INPUTS)   # its `full` part never ran
    assert actor.ran == ["random", "full"]
    mine = edits[0]
    assert mine.row["pairing_rerun_s"] == FULL_S and mine.row["speedup_paired_on"] == "unit"
    assert FULL_S * WALL <= mine.row["pairing_wait_s"] < FULL_S * WALL + 1.0


def test_no_full_timed_on_this_actor_or_pairing_rerun_re_runs_without_waiting(grid, tmp_path):
    rows, full, (a, b) = grid
    PaintActor(rows, "run", output=str(tmp_path)).run_unit(_unit("r1", [full.config_id, b.config_id], 2), INPUTS)
    fresh = PaintActor(rows, "run", output=str(tmp_path))
    edits = fresh.run_unit(_unit("r1", [a.config_id], 2), INPUTS)
    assert fresh.ran == ["random", "full"] and edits[0].row["pairing_wait_s"] is None
    rerun = PaintActor(rows, "run", output=str(tmp_path), pairing="rerun")
    rerun.run_unit(_unit("r0", [full.config_id], 1), INPUTS)
    edits = rerun.run_unit(_unit("r1", [a.config_id], 2), INPUTS)
    assert rerun.ran == ["full", "full", "random"] and edits[-1].row["pairing_rerun_s"] == FULL_S


def test_read_back_gives_up_at_its_deadline(tmp_path):
    image, waited = read_back(str(tmp_path / "nothing.png"), st.StorageConfig(), 0.2, poll_s=0.05)
    assert image is None and 0.2 <= waited < 1.0


def test_pairing_takes_the_median_of_the_actors_last_full_times_with_as_many_reference_images(grid, tmp_path):
    rows, full, (a, b) = grid
    PaintActor(rows, "run", output=str(tmp_path)).run_unit(_unit("r1", [full.config_id, b.config_id], 2), INPUTS)
    reader = PaintActor(rows, "run", output=str(tmp_path))
    reader.run_unit(_unit("r0", [full.config_id], 1), INPUTS)
    key = (full.config_id, 0)
    reader.full_times[key].extend([4.0, 1.0])   # as if two more `full` edits had taken 4 s and 1 s here
    edits = reader.run_unit(_unit("r1", [a.config_id], 2), INPUTS)
    assert edits[0].row["speedup_vs_full"] == FULL_S / VARIANT_S   # median of 2, 4, 1
    reader.ran.clear()
    with_reference = {**INPUTS, "references": [INPUTS["source"]]}   # more context tokens: another timing
    reader.run_unit(_unit("r1", [a.config_id], 2), with_reference)
    assert reader.ran == ["random", "full"]
