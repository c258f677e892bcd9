"""`dropedit bench` rows carry the roofline-predicted speedup on the real architectures (`roofline_speedup`,
per architecture) and the GPU it is predicted for (`roofline_device`, `--device-model`): summarised from
synthetic edits (no model runs here)."""
import argparse

import pytest

from bench.markdown import real_table
from bench.summary import real_pricing, summarise
from costs import flops, roofline
from jobs.bench import add_arguments

N = 4096   # noisy = source tokens of a 1024² edit
BENCH_ARCH = flops.Arch(family="flux", dim=32, dual_layers=1, single_layers=1, in_channels=64, out_channels=64,
                        text_dim=32, pooled_dim=32, guidance=True, head_dim=16)


def _edit(policy: str, rep: int, kept: int = N, active: int | None = None, source_cached: bool = False) -> dict:
    steps = [{"kept": N if i == 0 else kept, "total": N, "noisy": N, "from_layer": 0,
              "active": None if i == 0 else active, "keys": None if i == 0 or active is None else 2 * N,
              "seconds": 1.0, "cpu_seconds": 1.0, "policy_seconds": 0.0, "selector_seconds": 0.0}
             for i in range(4)]
    return {"size": 1024, "references": 1, "policy": policy, "rep": rep, "loop_s": 4.0, "policy_s": 0.0,
            "edit_s": 4.5, "loop_cpu_s": 4.0, "keep_ratio": 1.0, "active_ratio": 1.0, "text_tokens": [7],
            "source_cached": source_cached, "trace": steps}


def _rows(model: str = "flux", device: str = "H200") -> dict[str, dict]:
    edits = []
    for rep in range(2):
        edits += [_edit("full", rep), _edit("forced-gather:keep=0.5", rep, kept=N // 2),
                  _edit("forced-spotedit:active=0.2", rep, active=820, source_cached=True),
                  _edit("forced-focus:active=0.2", rep, active=820, source_cached=True)]
    return {r["policy"]: r for r in summarise(edits, BENCH_ARCH, real_pricing(model), device)}


def test_rows_carry_the_roofline_next_to_the_flop_ideal():
    rows = _rows()
    for row in rows.values():
        assert row["roofline_device"] == "H200"
        assert set(row["roofline_speedup"]) == set(row["predicted_real"]) == {"FLUX.1-Kontext-dev",
                                                                              "Qwen-Image-Edit"}
    assert rows["full"]["roofline_speedup"]["FLUX.1-Kontext-dev"] == 1.0
    for name in ("FLUX.1-Kontext-dev", "Qwen-Image-Edit"):
        gather, spot = rows["forced-gather:keep=0.5"], rows["forced-spotedit:active=0.2"]
        assert 1 < gather["roofline_speedup"][name] <= gather["predicted_real"][name]
        assert 1 < spot["roofline_speedup"][name] < spot["predicted_real"][name]
        # focus's static context has no SpotFusion blend: the same trace moves fewer bytes
        assert rows["forced-focus:active=0.2"]["roofline_speedup"][name] > spot["roofline_speedup"][name]


def test_the_device_changes_the_prediction_and_flux2_is_not_modelled():
    h100, h200 = _rows(device="H100 SXM"), _rows(device="H200")
    spot = "forced-spotedit:active=0.2"
    assert h100[spot]["roofline_speedup"]["FLUX.1-Kontext-dev"] < h200[spot]["roofline_speedup"]["FLUX.1-Kontext-dev"]
    flux2 = _rows(model="flux2")
    assert flux2["forced-gather:keep=0.5"]["roofline_speedup"] == {"FLUX.2-klein-4B": None}


def test_markdown_shows_the_roofline_columns():
    rows = list(_rows().values())
    table = real_table(rows, ["FLUX.1-Kontext-dev", "Qwen-Image-Edit"])
    assert "FLUX.1-Kontext-dev (roofline, H200)" in table[0]
    assert all(line.count("|") == table[0].count("|") for line in table)
    # rows written before the roofline existed still render, without its columns
    old = [{k: v for k, v in r.items() if not k.startswith("roofline")} for r in rows]
    assert "roofline" not in real_table(old, ["FLUX.1-Kontext-dev", "Qwen-Image-Edit"])[0]


def test_device_model_option():
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert p.parse_args([]).device_model == roofline.DEFAULT_DEVICE == "H100 SXM"
    assert p.parse_args(["--device-model", "H200"]).device_model == "H200"
    with pytest.raises(SystemExit):
        p.parse_args(["--device-model", "A100"])
