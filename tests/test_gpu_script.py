"""bench/gpu.sh end to end in its CPU smoke mode (tiny models, 32², FLUX.2 at 64² with 2 references, the families
side by side), and the arguments of its real-size runs (the real transformer configs of
actors/families/*/architecture.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import policies
from bench.gpu_args import FLUX2_VARIANTS, bench_args
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
    # FLUX.2: klein 4B and klein KV 9B with 2 references; no forced ToPi or SpotEdit (the family refuses them)
    klein = " ".join(bench_args("flux2", 2048, "o", smoke=False))
    assert klein.startswith("bench --model flux2 --layers 5 --single-layers 20 --heads 24 --head-dim 128 "
                            "--sizes 2048 --references 2")
    kv = bench_args("flux2-kv", 1024, "o", smoke=False)
    assert "--model flux2-kv --layers 8 --single-layers 24 --heads 32 --head-dim 128" in " ".join(kv)
    assert "forced-gather:keep=0.5" in kv and not any(a.startswith(("forced-topi", "forced-spotedit")) for a in kv)


def test_smoke_mode_writes_every_run_and_row(tmp_path):
    out = tmp_path / "gpu"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--smoke", str(out)], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    names = {p.name for p in out.iterdir()}
    assert {"environment.txt", "summary.md", "summary.json", "flux-32", "qwen-32", "flux2-64", "flux-32.log",
            "qwen-32.log", "flux2-64.log"} <= names
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
    # FLUX.2: what the family runs, 2 references (16 + 16 tokens at 64²); the refused policies with their reason
    rows = {r["policy"]: r for r in summary["rows"] if r["run"] == "flux2-64"}
    assert set(rows) == {"full", "random", "sparse_context", "forced-gather:keep=0.5", *FLUX2_VARIANTS}
    assert all(r["model"] == "flux2" and r["references"] == 2 and r["speedup"] for r in rows.values())
    assert rows["forced-gather:keep=0.5"]["keep"] == 0.5
    for policy in ("topi", "spotedit", "focus", "regione"):
        assert summary["skipped"][f"flux2-64 {policy}"].startswith("refused:")
    assert "no default omega" in summary["skipped"]["flux2-64 tokendrop"]
    md = (out / "summary.md").read_text()
    assert "| flux | 32² | 1 | forced-spotedit:active=0.5 |" in md and "| flux2 | 64² | 2 | full |" in md
