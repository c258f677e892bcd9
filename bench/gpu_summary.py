"""One table over the runs of `bench/gpu.sh`: every (model, size, reference count, policy) with tokens really
skipped, wall-clock speedup vs `full`, FLOP-predicted speedup, efficiency, policy overhead share and peak GPU memory.
`python -m bench.gpu_summary OUT` reads OUT/*/bench.json and writes OUT/summary.md and OUT/summary.json."""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any


def _peak(edits: list[dict[str, Any]], size: int, references: int, policy: str) -> float | None:
    peaks = [e.get("peak_memory_gb") for e in edits
             if e["size"] == size and e.get("references", 1) == references and e["policy"] == policy]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) if peaks else None


def run_rows(run: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of one run's bench.json, flattened."""
    out = []
    for r in result["rows"]:
        speedup, refs = r.get("speedup_loop", {}).get("median"), r.get("references", 1)
        out.append({"run": run, "model": result["settings"]["model"], "size": r["size"], "references": refs,
                    "policy": r["policy"], "keep": r["keep_ratio"], "active": r["active_ratio"],
                    "loop_s": r["loop_s"]["median"], "speedup": speedup,
                    "predicted": r.get("predicted_bench_vs_full", r["predicted_bench"]),   # older runs: no key
                    "efficiency": r.get("efficiency"), "overhead": r["policy_overhead_share_loop"],
                    "peak_gb": _peak(result["edits"], r["size"], refs, r["policy"])})
    return out


def _f(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def markdown(rows: list[dict[str, Any]], missing: list[str], device: str) -> str:
    lines = [f"# bench/gpu.sh on {device}", "",
             "Random weights, the real transformer configs (tiny text encoders and VAE); loop = denoising loop; "
             "speedup = full's loop time over the policy's (median of repetitions), FLOP-predicted over `full` "
             "too (klein KV's `full` reuses the reference K/V); efficiency = speedup ÷ FLOP-predicted; overhead = "
             "the policy's own time as a share of its loop.", "",
             "| model | size | refs | policy | keep | queries | loop s | speedup | FLOP-predicted | efficiency "
             "| overhead | peak GiB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['size']}² | {r['references']} | {r['policy']} | {r['keep']:.2f} "
                     f"| {r['active']:.2f} "
                     f"| {r['loop_s']:.2f} | {_f(r['speedup'], '.2f')}× | {r['predicted']:.2f}× "
                     f"| {_f(r['efficiency'] and 100 * r['efficiency'], '.1f')}% | {100 * r['overhead']:.1f}% "
                     f"| {_f(r['peak_gb'], '.1f')} |")
    if missing:
        lines += ["", "Runs without results (timed out or failed; see their .log): " + ", ".join(missing)]
    return "\n".join(lines) + "\n"


def summarise_runs(out: Path, expected: list[str]) -> dict[str, Any]:
    rows, missing, device, skipped = [], [], "?", {}
    for run in expected:
        path = out / run / "bench.json"
        if not path.exists():
            missing.append(run)
            continue
        result = json.loads(path.read_text())
        device = str(result["machine"].get("gpu") or result["machine"].get("device", device))
        rows += run_rows(run, result)
        skipped.update({f"{run} {k}": v for k, v in result["skipped"].items()})
    summary = {"rows": rows, "missing": missing, "skipped": skipped,
               "median_efficiency": statistics.median([r["efficiency"] for r in rows if r["efficiency"]] or [0.0])}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    md = markdown(rows, missing, device)
    if skipped:
        md += "\nSkipped policies:\n" + "".join(f"- {k}: {v}\n" for k, v in skipped.items())
    (out / "summary.md").write_text(md)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out, expected = Path(args[0]), args[1:]
    summary = summarise_runs(out, expected or sorted(p.parent.name for p in out.glob("*/bench.json")))
    print((out / "summary.md").read_text())
    return 1 if summary["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
