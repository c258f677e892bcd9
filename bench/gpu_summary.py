"""One table over the runs of `bench/gpu.sh`, built from OUT/edits.jsonl (`bench.gpu_lines`), so a run cut short
(its cap, a kill, the device's time limit) still counts every edit it finished: per (model, size, reference
count, policy) the text tokens the transformer saw, tokens really skipped, wall-clock speedup vs `full`,
FLOP-predicted and roofline-predicted speedups, efficiency, policy overhead share and peak GPU memory; and each
run's state (complete, partial, missing) with its environment.
`python -m bench.gpu_summary OUT [RUN ...]` writes OUT/summary.md and OUT/summary.json; exit status 1 when an
expected run (those named, else budget.json's runs, else every run in the lines) is not complete."""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from .gpu_budget import OWN
from .gpu_lines import RunLines, group, read_lines
from .gpu_result import result_of


def _peak(edits: list[dict[str, Any]], size: int, references: int, policy: str) -> float | None:
    peaks = [e.get("peak_memory_gb") for e in edits
             if e["size"] == size and e.get("references", 1) == references and e["policy"] == policy]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) if peaks else None


def run_rows(run: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary rows of one run's result, flattened."""
    model = result["settings"]["model"]
    phases = {e["policy"]: e.get("phase") for e in result["edits"] if e["policy"] != "full"}
    out = []
    for r in result["rows"]:
        refs = r.get("references", 1)
        out.append({"run": run, "model": model, "size": r["size"], "references": refs, "policy": r["policy"],
                    "phase": phases.get(r["policy"], "both"), "steps": r["steps"], "reps": r["reps"],
                    "text_tokens": r["text_tokens"], "keep": r["keep_ratio"], "active": r["active_ratio"],
                    "loop_s": r["loop_s"]["median"], "speedup": r.get("speedup_loop", {}).get("median"),
                    "predicted": r["predicted_bench_vs_full"], "efficiency": r.get("efficiency"),
                    "roofline": (r.get("roofline_speedup") or {}).get(OWN.get(model, "")),
                    "roofline_device": r.get("roofline_device"), "overhead": r["policy_overhead_share_loop"],
                    "peak_gb": _peak(result["edits"], r["size"], refs, r["policy"])})
    return out


def log_tail(exit_line: dict[str, Any] | None, lines: int = 3) -> list[str]:
    """The last lines of a run's log (bench/gpu.sh names it in the exit line): why a run did not complete, in
    the summary that comes back from a device even when the logs stay there (--detail)."""
    try:
        return Path(str((exit_line or {})["log"])).read_text(errors="replace").splitlines()[-lines:]
    except (KeyError, OSError):
        return []


def run_state(name: str, run: RunLines | None) -> dict[str, Any]:
    """complete / partial / missing, with what the run left: edits, exit status, environment, times."""
    if run is None or run.header is None:
        exit_line = run.exit if run else None
        return {"state": "missing", "edits": 0, "exit": exit_line, "log_tail": log_tail(exit_line)}
    env = run.header.get("environment", {})
    state = {"state": "complete" if run.complete else "partial", "edits": len(run.edits), "exit": run.exit,
             "gpu": env.get("gpu") or env.get("device"), "sdpa_choice": env.get("sdpa_choice"),
             "budget": run.header.get("budget")}
    if run.end:
        state.update({k: run.end.get(k) for k in ("seconds", "startup_s", "warmup_s")})
    else:
        state["log_tail"] = log_tail(run.exit)
    return state


def _f(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


INTRO = ("Random weights, the real transformer configs (tiny text encoders and VAE; Qwen's text repeated to the "
         "real model's length); loop = denoising loop; speedup = full's loop time over the policy's (median of "
         "repetitions, each against `full` of the same repetition); FLOP-predicted over `full` too (klein KV's "
         "`full` reuses the reference K/V); roofline = the trace priced on the run's real architecture (a "
         "prediction, – where not modelled: FLUX.2); efficiency = speedup ÷ FLOP-predicted; overhead = the "
         "policy's own time as a share of its loop. Rows of a run cut short count the edits it finished.")


def markdown(rows: list[dict[str, Any]], states: dict[str, dict[str, Any]], device: str) -> str:
    lines = [f"# bench/gpu.sh on {device}", "", INTRO, "",
             ("| model | size | refs | policy | steps | reps | text | keep | queries | loop s | speedup "
              "| FLOP-predicted | roofline | efficiency | overhead | peak GiB |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        text = "/".join(str(t) for t in r["text_tokens"])
        lines.append(f"| {r['model']} | {r['size']}² | {r['references']} | {r['policy']} | {r['steps']} "
                     f"| {r['reps']} | {text} | {r['keep']:.2f} | {r['active']:.2f} | {r['loop_s']:.2f} "
                     f"| {_f(r['speedup'], '.2f')}× | {r['predicted']:.2f}× | {_f(r['roofline'], '.2f')}× "
                     f"| {_f(r['efficiency'] and 100 * r['efficiency'], '.1f')}% | {100 * r['overhead']:.1f}% "
                     f"| {_f(r['peak_gb'], '.1f')} |")
    lines += ["", "| run | state | timed edits | exit | GPU | SDPA kernel | predicted s | cap s | start-up s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, s in states.items():
        budget, exit_line = s.get("budget") or {}, s.get("exit") or {}
        lines.append(f"| {name} | {s['state']} | {s['edits']} | {exit_line.get('status', '–')} "
                     f"| {s.get('gpu') or '–'} | {s.get('sdpa_choice') or '–'} "
                     f"| {_f(budget.get('predicted_s'), '.0f')} | {_f(budget.get('cap_s'), '.0f')} "
                     f"| {_f(s.get('startup_s'), '.0f')} |")
    for name, s in states.items():
        why = (s.get("exit") or {}).get("reason") or " / ".join(s.get("log_tail") or [])
        if s["state"] != "complete" and why:
            lines.append(f"\n{name} ({s['state']}): {why}")
    return "\n".join(lines) + "\n"


def expected_runs(out: Path, runs: dict[str, RunLines]) -> list[str]:
    budget = out / "budget.json"
    if budget.exists():
        return [r["name"] for r in json.loads(budget.read_text())["runs"]]
    return list(runs)


def summarise_runs(out: Path, expected: list[str] | None = None) -> dict[str, Any]:
    runs = group(read_lines(out / "edits.jsonl"))
    expected = expected or expected_runs(out, runs)
    names = list(dict.fromkeys([*expected, *runs]))
    rows, skipped, device = [], {}, "?"
    for name in names:
        result = result_of(runs[name]) if name in runs else None
        if result is None:
            continue
        device = str(result["machine"].get("gpu") or result["machine"].get("device", device))
        rows += run_rows(name, result)
        skipped.update({f"{name} {k}": v for k, v in result["skipped"].items()})
    states = {name: run_state(name, runs.get(name)) for name in names}
    summary = {"rows": rows, "runs": states, "skipped": skipped,
               "missing": [n for n in expected if states[n]["state"] == "missing"],
               "partial": [n for n in expected if states[n]["state"] == "partial"],
               "median_efficiency": statistics.median([r["efficiency"] for r in rows if r["efficiency"]] or [0.0])}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    md = markdown(rows, states, device)
    if skipped:
        md += "\nSkipped policies:\n" + "".join(f"- {k}: {v}\n" for k, v in skipped.items())
    (out / "summary.md").write_text(md)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m bench.gpu_summary OUT [RUN ...]", file=sys.stderr)
        return 2
    out = Path(args[0])
    summary = summarise_runs(out, args[1:] or None)
    print((out / "summary.md").read_text())
    return 1 if summary["missing"] or summary["partial"] else 0


if __name__ == "__main__":
    sys.exit(main())
