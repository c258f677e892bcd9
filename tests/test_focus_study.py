"""The focus study's aggregation, verdicts and page, on rows written by hand (the measurement itself runs in
`studies.focus.run`; one tiny configuration runs end to end below)."""
from __future__ import annotations

import json
import math

import numpy as np

from studies.focus import grid, verdicts
from studies.focus.summary import GROUPS, aggregate


def _row(config, record, local, mse_full, flop, edit=20.0, edit_full=20.0, category="add"):
    return {"model": "m", "config": config, "record": record, "local": local, "category": category,
            "skipped": 0, "keep": 1.0, "query": 1.0, "mse_full": mse_full, "ssim_full": 1.0, "mse_target": 0.01,
            "psnr_edit": edit, "psnr_edit_full": edit_full, "mse_bg": 0.001, "mse_bg_full": 0.001,
            "flop_toy": flop, "flop_kontext_1024": flop, "flop_kontext_2048": flop, "flop_qwen_1024": flop,
            "flop_qwen_2048": flop}


def test_aggregate_splits_local_and_global_and_keeps_identical_as_inf():
    rows = [_row("full|", "a", True, 0.0, 1.0), _row("full|", "b", False, 0.0, 1.0),
            _row("focus|", "a", True, 1e-4, 5.0, edit=19.0), _row("focus|", "b", False, 0.0, 2.0)]
    local = {r["config"]: r for r in aggregate(rows, "m", GROUPS["local"])}
    assert local["full|"]["psnr_full"] == math.inf and local["focus|"]["psnr_full"] == 40.0
    assert local["focus|"]["edit_vs_full"] == -1.0 and local["focus|"]["kind"] == "focus"
    assert {r["config"]: r["flop_kontext_1024"] for r in aggregate(rows, "m")} == {"full|": 1.0, "focus|": 3.5}


def test_verdicts_follow_the_numbers():
    focus = {"config": "focus|", "kind": "focus", "flop_kontext_1024": 5.0, "psnr_full": 35.0, "psnr_bg": 30.0,
             "psnr_bg_full": 29.0}
    cache = {"config": "full|first-block:threshold=0.2", "kind": "cache", "flop_kontext_1024": 5.1,
             "psnr_full": 40.0}
    slow = {"config": "spotedit|", "kind": "seed", "flop_kontext_1024": 2.0, "psnr_full": 30.0}
    assert "not met" in verdicts.cache_goal(focus, [focus, cache])          # the cache is as fast and better
    assert "met" in verdicts.speed_goal(focus, 4.0, "local") and "not met" in verdicts.speed_goal(focus, 7.0, "x")
    text = verdicts.dominance_goal([focus], [focus, cache, slow], "local")
    assert "not met" in text and "first-block" in text and "spotedit" not in text.split("not by any")[1]
    assert "met" in verdicts.background_goal(focus)
    cats = {"add": {"edit_vs_full": -0.2}, "remove": {"edit_vs_full": -0.9}}
    assert "not met" in verdicts.edit_goal(cats) and "remove -0.90" in verdicts.edit_goal(cats)


def test_grid_kinds():
    kinds = {c: grid.kind(c) for c in grid.grid()}
    assert kinds["full|"] == "full" and kinds["focus|"] == "focus" and kinds["regione|"] == "regione"
    assert kinds["peer:cache-dit|"] == "peer" and kinds["spotedit|"] == "seed"
    assert kinds["full|velocity-decay"] == "cache" and kinds["spotedit|first-block:threshold=0.12"] == "composition"
    assert all(c in kinds for c in grid.ABLATION.values())


def test_one_configuration_end_to_end(tmp_path, flux_pipe):
    """A tiny record through `measure`: fidelity, edit PSNR, projections onto both real models at both sizes."""
    from studies.cache.run import Record
    from studies.focus.measure import measure
    from toy.data import write_dataset

    write_dataset(tmp_path, 1, seed=1, size=64)
    spec = json.loads((tmp_path / "manifest.jsonl").read_text().splitlines()[0])
    record = Record(spec, tmp_path)
    row = measure(flux_pipe, "focus[budget=0.5;margin=0;reference_margin=0]|", record, 3, paired=True)
    assert row["local"] == (spec["category"] not in ("grayscale", "invert", "background"))
    assert np.isfinite(row["mse_full"]) and row["cpu_speedup"] > 0
    assert all(row[f"flop_{m}_{s}"] > 1 for m in ("kontext", "qwen") for s in (1024, 2048))
    assert row["flop_kontext_2048"] >= row["flop_kontext_1024"]   # attention grows faster than the rest
