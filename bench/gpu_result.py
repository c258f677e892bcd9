"""A device run's lines (`bench.gpu_lines`) as the result `dropedit bench` writes to bench.json: the summary rows
(`bench.summary.summarise`: speedups A/B with `full`, FLOP and roofline predictions on the real architectures)
from whatever edits the run finished, so a run cut short still has its rows."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from costs import flops
from costs.roofline import DEFAULT_DEVICE

from .gpu_lines import RunLines
from .summary import real_pricing, summarise


def result_of(run: RunLines) -> dict[str, Any] | None:
    """bench.json's content for `run` (None: no header or no edit yet)."""
    if run.header is None or not run.edits:
        return None
    settings = run.header["settings"]
    arch = flops.Arch(**run.header["bench_arch"])
    real = real_pricing(settings["model"])
    device = settings.get("device_model") or DEFAULT_DEVICE
    edits = [{k: v for k, v in e.items() if k not in ("kind", "run")} for e in run.edits]
    machine = {**run.header.get("machine", {}), **run.header.get("environment", {})}
    return {"machine": machine, "bench_arch": asdict(arch), "rows": summarise(edits, arch, real, device),
            "skipped": dict(run.skipped), "edits": edits, "settings": settings, "pipeline": None,
            "seconds": (run.end or {}).get("seconds"), "complete": run.complete,
            "real_architectures": {name: {"arch": asdict(a), "text_tokens_per_call": {
                n: list(text(n)) for n in settings["references"]}} for name, (a, text) in real.items()}}
