"""One run of `bench/gpu.sh` (a model family at one size, `bench.gpu_args.run_plan`): builds the benchmark
model of the real classes (real depth and width, random weights, tiny text encoders and VAE; Qwen's text
padded to the real length, `bench.gpu_text`), then runs the schedule of `bench.gpu_args.schedule` (forced
plans first, every label warmed up once, A/B with `full`) and appends one JSON line per finished edit to the
shared edits.jsonl (`bench.gpu_lines`). At the end it writes bench.json and bench.md as `dropedit bench` does.

`python -m bench.gpu_run NAME --edits OUT/edits.jsonl --out DIR [--smoke] [--started EPOCH] [--cap-s S]
[--predicted-s S]`."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .gpu_args import RunPlan, Slot, by_name, schedule
from .gpu_lines import RunLines, append_line


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Run:
    """The built model and policies of one run, and where its lines go."""

    def __init__(self, plan: RunPlan, edits: Path, budget: dict[str, Any], started: float) -> None:
        import torch

        import actors
        from actors.loading import default_dtype

        from .gpu_text import pad_prompts
        from .speed import (
            bench_image,
            build_bench_pipeline,
            build_policies,
            parse_policy,
            reference_images,
        )

        if plan.smoke:   # the smoke runs go side by side on a small CPU
            torch.set_num_threads(1)
        self.plan, self.edits, self.started = plan, edits, started
        self.device = actors.default_device()
        self.dtype = default_dtype(self.device)
        self.pipe = build_bench_pipeline(plan.family, plan.layers, plan.single_layers, plan.heads, plan.head_dim,
                                         self.device, self.dtype)
        self.padded = pad_prompts(self.pipe, plan.family)
        specs = [parse_policy(label) for label in ("full", *plan.forced, *plan.policies)]
        self.policies, self.skipped = build_policies(self.pipe, specs)
        self.image = bench_image(plan.size)
        self.refs = reference_images(plan.size, plan.references)
        self.lines = RunLines(plan.name)
        self.budget = budget

    def write(self, record: dict[str, Any]) -> None:
        append_line(self.edits, {"run": self.plan.name, **record})

    def header(self) -> None:
        from dataclasses import asdict

        from costs import flops

        from . import markdown as report
        from .gpu_env import environment
        from .gpu_text import real_lengths

        machine = report.machine()
        machine["load_start"] = report.load_average()
        record = {"kind": "run", "settings": self.plan.settings(), "bench_arch": asdict(flops.arch_of(
                      self.pipe.transformer)), "machine": machine, "budget": self.budget,
                  "environment": environment(self.device, self.dtype, self.plan.heads, self.plan.head_dim,
                                             self.pipe.transformer),
                  "real_text_tokens": real_lengths(self.plan.family), "started": self.started}
        self.lines.header = record
        self.write(record)
        for label, reason in self.skipped.items():
            self.skip(label, reason)

    def skip(self, label: str, reason: str) -> None:
        self.skipped[label] = self.lines.skipped[label] = reason
        self.write({"kind": "skipped", "policy": label, "reason": reason})
        log(f"{self.plan.name} {label}: skipped ({reason})")

    def edit(self, slot: Slot) -> dict[str, Any] | None:
        """One edit of the schedule; its row, or None when the policy failed (then skipped, with the reason)."""
        import torch

        from .speed import one_edit

        try:
            return one_edit(self.pipe, self.policies[slot.label], self.image, self.plan.size, slot.steps, 0,
                            self.refs)
        except Exception as err:  # noqa: BLE001 - a policy that fails here (OOM included) is reported, not fatal
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.skip(slot.label, f"failed at {self.plan.size}²: {type(err).__name__}: {err}")
            return None

    def run(self) -> dict[str, float]:
        """The schedule; returns the start-up and warm-up seconds."""
        startup = time.time() - self.started
        warmup = 0.0
        for slot in schedule(self.plan):
            if "full" in self.skipped:   # no A side for any edit: the run's time is better left to the next run
                log(f"{self.plan.name}: stopped, `full` cannot run")
                break
            if slot.label in self.skipped:
                continue
            t0 = time.perf_counter()
            row = self.edit(slot)
            if row is None:
                continue
            if slot.rep is None:
                warmup += time.perf_counter() - t0
                log(f"{self.plan.name} {slot.label}: warm-up, {slot.steps} steps, {row['edit_s']:.2f} s")
                continue
            record = {"kind": "edit", "phase": slot.phase, "policy": slot.label, "size": self.plan.size,
                      "references": self.plan.references, "rep": slot.rep, "steps": slot.steps,
                      "encoder_text_tokens": self.padded.encoded if self.padded else None, **row}
            self.lines.edits.append(record)
            self.write(record)
            log(f"{self.plan.name} rep {slot.rep} {slot.label}: loop {row['loop_s']:.2f} s, "
                f"keep {row['keep_ratio']:.2f}, text {row['text_tokens']}")
        return {"startup_s": startup, "warmup_s": warmup}


def finish(run: Run, out: Path, times: dict[str, float]) -> None:
    """bench.json and bench.md of the run, then its `end` line."""
    from . import markdown as report
    from .gpu_result import result_of

    run.lines.header["machine"]["load_end"] = report.load_average()
    result = result_of(run.lines)
    seconds = time.time() - run.started
    if result is not None:
        result["seconds"] = seconds
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(result, indent=1, default=str))
        (out / "bench.md").write_text(report.markdown(result))
    run.write({"kind": "end", "seconds": seconds, "edits": len(run.lines.edits), **times,
               "bench_json": str(out / "bench.json") if result is not None else None})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_run", description=__doc__)
    p.add_argument("name", help="family-size, e.g. flux-1024 (bench.gpu_args.RUNS)")
    p.add_argument("--edits", required=True, help="the JSON-lines file every run appends to")
    p.add_argument("--out", required=True, help="folder for this run's bench.json and bench.md")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--started", type=float, default=None, help="when the run's process was started (epoch s)")
    p.add_argument("--cap-s", type=float, default=None)
    p.add_argument("--predicted-s", type=float, default=None)
    a = p.parse_args(argv)
    plan = by_name(a.name, a.smoke)
    budget = {"predicted_s": a.predicted_s or None, "cap_s": a.cap_s, "prediction": True}   # smoke: 0, none
    run = Run(plan, Path(a.edits), budget, a.started or time.time())
    run.header()
    times = run.run()
    finish(run, Path(a.out), times)
    if "full" in run.skipped:
        log(f"{plan.name}: the reference policy failed: {run.skipped['full']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
