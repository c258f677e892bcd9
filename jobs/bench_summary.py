"""From raw benchmark edits to one row per (size, policy): measured speedups with their spread, the FLOP
ideal of the same traces on the benchmark model and on the real architectures, efficiency, overhead."""
from __future__ import annotations

import statistics
from typing import Any

from actors import flops

from .bench_speed import spread

# What each paper reports (wall-clock, their GPUs, their step counts): shown next to our FLOP pricing.
PAPERS: dict[str, str] = {
    "tokendrop": "Kontext: up to 1.8× at 1024², 2× at 2048²",
    "topi": "1.2–1.33× (Kontext, Qwen)",
    "spotedit": "Kontext 1.67–1.95×, Qwen 1.59–1.72×",
    "sparse_context": "~2× one reference, ~4× several",
}


class _Step:
    """A trace row of the JSON, priced like a StepTrace."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.kept, self.total, self.noisy = row["kept"], row["total"], row["noisy"]
        self.from_layer, self.active, self.keys = row.get("from_layer", 0), row.get("active"), row.get("keys")


def _steps(edit: dict[str, Any]) -> list[_Step]:
    return [_Step(r) for r in edit["trace"]]


def _predicted(arch: flops.Arch, edit: dict[str, Any], text: Any) -> float:
    return flops.predicted_speedup(arch, _steps(edit), text, edit.get("source_cached", False))


def _ratios(full: dict[int, float], mine: dict[int, float]) -> list[float]:
    return [full[rep] / mine[rep] for rep in sorted(mine) if rep in full and mine[rep] > 0]


def summarise(edits: list[dict[str, Any]], bench_arch: flops.Arch) -> list[dict[str, Any]]:
    """One row per (size, policy) in the order measured; `full` of the same size and repetition is the A side."""
    rows = []
    keys = list(dict.fromkeys((e["size"], e["policy"]) for e in edits))
    for size, label in keys:
        mine = [e for e in edits if e["size"] == size and e["policy"] == label]
        full = {e["rep"]: e for e in edits if e["size"] == size and e["policy"] == "full"}
        loop = {e["rep"]: e["loop_s"] for e in mine}
        work = {e["rep"]: e["loop_s"] - e["policy_s"] for e in mine}
        edit = {e["rep"]: e["edit_s"] for e in mine}
        row: dict[str, Any] = {
            "size": size, "policy": label, "reps": len(mine), "steps": len(mine[0]["trace"]),
            "noisy_tokens": mine[0]["trace"][0]["noisy"], "source_tokens": mine[0]["trace"][0]["total"],
            "text_tokens": mine[0]["text_tokens"],
            "keep_ratio": statistics.median(e["keep_ratio"] for e in mine),
            "active_ratio": statistics.median(e["active_ratio"] for e in mine),
            "loop_s": spread(list(loop.values())), "edit_s": spread(list(edit.values())),
            "loop_cpu_s": spread([e["loop_cpu_s"] for e in mine]),
            "policy_overhead_share_loop": statistics.median(e["policy_s"] / e["loop_s"] for e in mine),
            "policy_overhead_share_edit": statistics.median(e["policy_s"] / e["edit_s"] for e in mine),
            "paper": PAPERS.get(label.split(":")[0]),
        }
        if full:
            row["speedup_loop"] = spread(_ratios({r: e["loop_s"] for r, e in full.items()}, loop))
            row["speedup_loop_without_policy"] = spread(
                _ratios({r: e["loop_s"] - e["policy_s"] for r, e in full.items()}, work))
            row["speedup_edit"] = spread(_ratios({r: e["edit_s"] for r, e in full.items()}, edit))
            row["speedup_loop_cpu"] = spread(_ratios({r: e["loop_cpu_s"] for r, e in full.items()},
                                                     {e["rep"]: e["loop_cpu_s"] for e in mine}))
        predicted = statistics.median(_predicted(bench_arch, e, e["text_tokens"]) for e in mine)
        row["predicted_bench"] = predicted
        if "speedup_loop" in row:
            row["efficiency"] = row["speedup_loop"]["median"] / predicted
            row["efficiency_without_policy"] = row["speedup_loop_without_policy"]["median"] / predicted
            row["efficiency_cpu"] = row["speedup_loop_cpu"]["median"] / predicted
        row["predicted_real"] = {
            name: statistics.median(_predicted(arch, e, text) for e in mine)
            for name, (arch, text) in flops.REAL.items()}
        rows.append(row)
    return rows
