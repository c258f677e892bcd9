"""bench/gpu.sh: the plan of its real-size runs (real configs, steps, repetitions, schedule), their predicted
budget, Qwen's text at the real length, the JSON lines it keeps; end to end in its CPU smoke mode (tiny models,
32², FLUX.2 at 64² with 2 references, the runs side by side); and a kill mid-run that leaves every finished
edit's line, from which the summary builds."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import policies
from bench import gpu_budget
from bench.gpu_args import (
    FLUX2_VARIANTS,
    REPS,
    RUNS,
    by_name,
    refusals,
    run_plan,
    schedule,
)
from bench.gpu_lines import append_line, group, read_lines
from bench.gpu_summary import summarise_runs
from bench.gpu_text import PaddedPrompts, real_lengths
from costs import roofline
from costs.architectures import real

ROOT = Path(__file__).resolve().parents[1]
FORCED = ["forced-gather:keep=0.5", "forced-topi:keep=0.5,from_layer=1", "forced-topi:keep=0.5,from_layer=1,interval=3",
          "forced-spotedit:active=0.5", "forced-spotedit:active=0.2,selector=True"]
ENV = {**os.environ, "PYTHON": sys.executable}


def test_real_runs_use_the_real_configs():
    flux = run_plan("flux", 2048)
    assert (flux.layers, flux.single_layers, flux.heads, flux.head_dim) == (19, 38, 24, 128)
    assert (run_plan("qwen", 1024).layers, run_plan("qwen", 1024).single_layers) == (60, 0)
    klein, kv = run_plan("flux2", 2048), run_plan("flux2-kv", 1024)
    assert (klein.layers, klein.single_layers, klein.heads, klein.references) == (5, 20, 24, 2)
    assert (kv.layers, kv.single_layers, kv.heads, kv.head_dim) == (8, 24, 32, 128)
    assert "forced-topi:keep=0.5,from_layer=10" in run_plan("qwen", 1024).forced
    # FLUX.2: no forced ToPi or SpotEdit (the family refuses them), its own TokenDrop / Sparse Context settings
    assert klein.forced == ("forced-gather:keep=0.5", *FLUX2_VARIANTS)
    assert {"topi", "spotedit", "focus", "regione"} <= set(refusals(klein))
    assert by_name("flux2-kv-1024") == kv


def test_steps_let_every_policy_prune_and_the_schedule():
    plan = run_plan("qwen", 1024)
    # SpotEdit's initial steps (and Qwen TokenDrop's 4 full ones) are followed by pruned steps
    assert plan.steps >= 8 > policies.REGISTRY["spotedit"]().initial_steps
    assert set(plan.policies) == set(policies.REGISTRY) - {"full"}
    assert run_plan("flux2", 1024).steps == 4 and run_plan("flux", 2048).policies == ()
    slots = schedule(plan)
    phases = [s.phase for s in slots]
    assert phases == sorted(phases)   # "forced" < "policies": the forced plans first
    timed = [s for s in slots if s.rep is not None]
    for label in ("full", *plan.forced):
        reps = [s.rep for s in timed if s.label == label]
        assert len(reps) >= REPS == 3 and len(set(reps)) == len(reps)
    for label in {s.label for s in slots}:   # warmed up once, before it is timed
        first = next(i for i, s in enumerate(slots) if s.label == label)
        assert slots[first].rep is None and sum(s.rep is None and s.label == label for s in slots) == 1
    for rep in {s.rep for s in timed}:   # A/B: every repetition has its own `full`
        assert "full" in [s.label for s in timed if s.rep == rep]
    assert all(s.steps == plan.steps for s in timed)


def test_budget_is_the_roofline_prediction_and_fits():
    plans = [run_plan(f, s) for f, s in RUNS]
    budgets = [gpu_budget.run_budget(p) for p in plans]
    for b in budgets:
        assert b.predicted_s > 0 and b.cap_s == math.ceil(gpu_budget.MARGIN * b.predicted_s + gpu_budget.STARTUP_S)
    kept, dropped = gpu_budget.fit(budgets, gpu_budget.BUDGET_S)
    assert kept == budgets[: len(kept)] and dropped == budgets[len(kept):]   # the least important dropped
    assert sum(gpu_budget.needed_s(b) for b in kept) <= gpu_budget.BUDGET_S
    assert {b.name for b in kept} >= {"flux-1024", "qwen-1024", "flux-2048"}
    # full on FLUX.1-Kontext at 1024² is the roofline's call time, step by step, on the real text length
    priced = real("FLUX.1-Kontext-dev")
    call = roofline.call_time(priced.arch, roofline.DEFAULT_DEVICE, 512, 4096, 4096)
    assert gpu_budget.edit_seconds(plans[0], "full", 8)[0] == pytest.approx(8 * call)
    # a forced plan costs less than full; FLUX.2 is priced by its FLOPs (the roofline does not model it)
    assert gpu_budget.edit_seconds(plans[0], "forced-spotedit:active=0.2,selector=True", 8)[0] < 8 * call
    assert gpu_budget.edit_seconds(run_plan("flux2", 1024), "full", 4)[1] == "FLOPs at bf16 peak"


def test_qwen_text_padded_to_the_real_length():
    assert real_lengths("qwen") == (1389, 1377) and real_lengths("flux") is None

    class Pipe:
        def encode_prompt(self, prompt, **kwargs):
            n = 7 if prompt == " " else 9
            return torch.arange(n, dtype=torch.float32).view(1, n, 1), None

    padded = PaddedPrompts(Pipe(), 1389, 1377, " ")
    embeds, mask = padded(prompt="make it red")
    negative, _ = padded(prompt=" ")
    assert embeds.shape[1] == 1389 and negative.shape[1] == 1377 and mask is None
    assert embeds[0, :18, 0].tolist() == list(range(9)) * 2 and padded.encoded == [9, 7]


def test_lines_survive_a_torn_write(tmp_path):
    path = tmp_path / "edits.jsonl"
    append_line(path, {"kind": "run", "run": "a", "settings": {}})
    append_line(path, {"kind": "edit", "run": "a", "policy": "full"})
    with open(path, "a") as f:
        f.write('{"kind": "edit", "run": "a", "pol')   # a kill in the middle of a write
    runs = group(read_lines(path))
    assert len(runs["a"].edits) == 1 and not runs["a"].complete


def test_train_toy_needs_a_config_path(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--smoke", "--train-toy"], env=ENV,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "needs a config path" in done.stderr


def _edit_lines(path: Path) -> list[dict]:
    return [line for line in read_lines(path) if line["kind"] == "edit"]


def test_smoke_mode_writes_every_run_and_row(tmp_path):
    out = tmp_path / "gpu"
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--smoke", str(out)], env=ENV,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PREDICTED" in done.stderr and "qwen-2048" in done.stderr   # the GPU budget, printed first
    names = {p.name for p in out.iterdir()}
    assert {"environment.txt", "budget.json", "edits.jsonl", "summary.md", "summary.json", "flux-32", "qwen-32",
            "flux2-64", "flux-32.log"} <= names
    summary = json.loads((out / "summary.json").read_text())
    assert summary["missing"] == summary["partial"] == []
    runs = group(read_lines(out / "edits.jsonl"))
    for run in ("flux-32", "qwen-32"):
        assert (out / run / "bench.md").exists() and runs[run].exit["status"] == 0
        env = runs[run].header["environment"]
        assert env["torch"] == torch.__version__ and "sdpa_choice" in env and "flash" in env["sdpa_enabled"]
        rows = {r["policy"]: r for r in summary["rows"] if r["run"] == run}
        # topi's defaults exempt 10 of 2 layers; RegionE's fitted velocity table is for 28 steps, not 8
        assert set(rows) == {*policies.REGISTRY, *FORCED} - {"topi", "regione"}
        assert all(r["speedup"] and r["steps"] == 8 for r in rows.values())
        assert rows["full"]["reps"] == 4 and rows["forced-gather:keep=0.5"]["reps"] == 3
        assert rows["spotedit"]["reps"] == 1 and rows["forced-gather:keep=0.5"]["keep"] == 0.5
        # 8 steps, 4 noisy tokens: one full step, then 2 (resp. 1) of 4 with queries
        assert rows["forced-spotedit:active=0.5"]["active"] == pytest.approx((1 + 7 * 0.5) / 8)
        assert rows["forced-spotedit:active=0.2,selector=True"]["active"] == pytest.approx((1 + 7 * 0.25) / 8)
        assert "28 steps" in summary["skipped"][f"{run} regione"]
    qwen = [e for e in _edit_lines(out / "edits.jsonl") if e["run"] == "qwen-32"]
    assert all(e["text_tokens"] == [1389, 1377] and e["encoder_text_tokens"][0] < 1389 for e in qwen)
    rows = {r["policy"]: r for r in summary["rows"] if r["run"] == "flux2-64"}
    assert set(rows) == {"full", "random", "sparse_context", "forced-gather:keep=0.5", *FLUX2_VARIANTS}
    assert all(r["references"] == 2 and r["steps"] == 4 for r in rows.values())
    assert summary["skipped"]["flux2-64 topi"].startswith("refused:")
    md = (out / "summary.md").read_text()
    assert "| qwen | 32² | 1 | full | 8 | 4 | 1389/1377 |" in md and "| flux2 | 64² | 2 | full |" in md


def test_a_kill_mid_run_keeps_every_finished_edit(tmp_path):
    out = tmp_path / "gpu"
    script = subprocess.Popen(["bash", str(ROOT / "bench" / "gpu.sh"), "--smoke", "--runs", "qwen-32", str(out)],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    seen: list[dict] = []
    try:
        deadline = time.monotonic() + 600
        while len(seen) < 3 and script.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            seen = _edit_lines(out / "edits.jsonl")
        assert len(seen) >= 3, "no edit lines before the deadline"
        os.kill(script.pid, signal.SIGTERM)   # mid-run: the qwen run has ~30 more edits to go
        _, err = script.communicate(timeout=300)
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
    assert script.returncode == 143, err[-2000:]
    kept = _edit_lines(out / "edits.jsonl")
    assert kept[: len(seen)] == seen   # every line there at the kill is still there, unchanged
    run = group(read_lines(out / "edits.jsonl"))["qwen-32"]
    assert not run.complete and not (out / "qwen-32" / "bench.json").exists()
    for summary in (json.loads((out / "summary.json").read_text()), summarise_runs(out)):
        assert summary["partial"] == ["qwen-32"]
        rows = {r["policy"]: r for r in summary["rows"]}
        assert "full" in rows and sum(r["reps"] for r in rows.values()) == len(kept)
