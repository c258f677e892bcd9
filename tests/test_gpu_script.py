"""bench/gpu.sh end to end in its CPU smoke mode (tiny model, 32², both families side by side), and the
arguments of its real-size runs (the real transformer configs of actors/families/*/architecture.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import policies
from bench.gpu_args import bench_args
from bench.speed import policy_specs

ROOT = Path(__file__).resolve().parents[1]
FORCED = ["forced-gather:keep=0.5", "forced-topi:keep=0.5,from_layer=1", "forced-topi:keep=0.5,from_layer=1,interval=3",
          "forced-spotedit:active=0.5", "forced-spotedit:active=0.2,selector=True"]


def test_real_runs_use_the_real_configs_and_every_policy():
    flux = bench_args("flux", 2048, "out/flux-2048", smoke=False)
    assert " ".join(flux).startswith("bench --model flux --layers 19 --single-layers 38 --heads 24 --head-dim 128 "
                                     "--sizes 2048")
    qwen = bench_args("qwen", 1024, "o", smoke=False)
    assert "--layers 60 --single-layers 0 --heads 24 --head-dim 128" in " ".join(qwen)
    assert "forced-topi:keep=0.5,from_layer=10" in qwen and "--no-pipeline" in qwen
    labels = [s.label for s in policy_specs(["registered", "forced-gather:keep=0.5"], policies.REGISTRY)]
    assert labels == [*policies.REGISTRY, "forced-gather:keep=0.5"]


def test_smoke_mode_writes_every_run_and_row(tmp_path):
    out = tmp_path / "gpu"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--smoke", str(out)], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    names = {p.name for p in out.iterdir()}
    assert {"environment.txt", "summary.md", "summary.json", "flux-32", "qwen-32", "flux-32.log",
            "qwen-32.log"} <= names
    summary = json.loads((out / "summary.json").read_text())
    assert summary["missing"] == []
    for run, model in (("flux-32", "flux"), ("qwen-32", "qwen")):
        assert (out / run / "bench.md").exists()
        rows = {r["policy"]: r for r in summary["rows"] if r["run"] == run}
        # topi's defaults exempt 10 of 2 layers; RegionE's fitted velocity table is for 28 steps, not 2
        assert set(rows) == {*policies.REGISTRY, *FORCED} - {"topi", "regione"}
        assert all(r["model"] == model and r["speedup"] for r in rows.values())
        assert rows["forced-gather:keep=0.5"]["keep"] == 0.5
        assert rows["forced-topi:keep=0.5,from_layer=1"]["keep"] == 0.5
        # 2 steps, 4 noisy tokens: one full step, then 2 (resp. 1) of 4 with queries
        assert rows["forced-spotedit:active=0.5"]["active"] == 0.75
        assert rows["forced-spotedit:active=0.2,selector=True"]["active"] == 0.625
        assert "exempt_layers" in summary["skipped"][f"{run} topi"]
        assert "28 steps" in summary["skipped"][f"{run} regione"]
    assert "| flux | 32² | forced-spotedit:active=0.5 |" in (out / "summary.md").read_text()
