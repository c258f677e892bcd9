"""Temporal caches, token pruning, their compositions and the cache-dit peer on the same edits: fidelity to the
uncached `full` edit and to the exact target, skipped calls, FLOP-ideal speedup on FLUX.1-Kontext-dev (the toy's
traces priced on the real config by `costs.flops`, skipped blocks included) and measured speedup (paired with
`full` on the same record; wall time on a shared CPU is noisy).

    python -m studies.cache.compare [--model toy-flux-kontext-v2] [--steps 28] [--records N] [--config "POLICY[k=v;..]|CACHE"]

prints a Markdown table, one row per configuration, means over the demo records (configs/demo_manifest.jsonl).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from costs import flops, real
from core.resources import resource

CONFIGS = resource("configs")
DEFAULT_CONFIGS = (
    "full|", "full|first-block:threshold=0.05", "full|first-block:threshold=0.12", "full|first-block:threshold=0.25",
    "full|magcache:threshold=0.06", "full|magcache:threshold=0.25", "full|taylorseer:interval=3",
    "full|taylorseer:interval=5", "tokendrop[omega=0]|", "tokendrop[omega=0]|first-block:threshold=0.12",
    "tokendrop[omega=0]|magcache:threshold=0.25", "tokendrop[omega=0]|taylorseer:interval=3", "random[ratio=0.5]|",
    "random[ratio=0.5]|first-block:threshold=0.12", "peer:cache-dit|", "peer:cache-dit[taylorseer=true]|",
)


@dataclass(frozen=True)
class PlannedCall:
    branch: str = "cond"
    skipped_from: int | None = None
    skipped_call: bool = False


@dataclass(frozen=True)
class PeerStep:
    noisy: int
    total: int
    kept: int
    cache_calls: tuple = ()
    from_layer: int = 0
    active: None = None


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def psnr_of(mean_squared_error: float) -> float:
    return float("inf") if mean_squared_error == 0 else float(10 * np.log10(1.0 / mean_squared_error))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr_of(mse(a, b))


def _params(text: str) -> tuple[str, dict[str, Any]]:
    from core.assignments import parse_assignments

    name, _, rest = text.partition("[")
    return name, parse_assignments([p for p in rest.rstrip("]").split(";") if p]) if rest else {}


def run_config(pipe: Any, config: str, record: dict[str, Any], steps: int, base: Path = CONFIGS) -> dict[str, Any]:
    """One edit of `record` (its files relative to `base`) by `config` ("POLICY[k=v;...]|CACHE" or a peer)."""
    import actors
    import policies
    from actors import peers

    image = base / record["image"]
    what, _, cache = config.partition("|")
    if what.startswith("peer:"):
        name, params = _params(what[5:])
        peer = peers.make(name, **params)
        cpu0 = time.process_time()
        plain = peer.edit(pipe, image, record["instruction"], seed=0, steps=steps, plain=True)
        cpu1 = time.process_time()
        r = peer.edit(pipe, image, record["instruction"], seed=0, steps=steps)
        cpu2 = time.process_time()
        n = (r.height // 16) * (r.width // 16)
        cached = set(r.stats.get("cached_steps", []))
        front = int(r.params.get("front", 1))
        trace = [PeerStep(n, n, n, (PlannedCall(skipped_from=front),) if i in cached else (PlannedCall(),))
                 for i in range(r.steps)]
        return {"pixels": r.pixels, "seconds": r.seconds, "trace": trace, "skipped": sum(r.skipped_calls.values()),
                "keep": 1.0, "query": 1.0, "source_cached": False, "reference_seconds": plain.seconds,
                "cpu_seconds": cpu2 - cpu1, "reference_cpu_seconds": cpu1 - cpu0}
    name, params = _params(what)
    policy = policies.make(name, **params)
    cpu0 = time.process_time()   # process CPU time: on a shared CPU it grows far less with other work than wall time
    with PIL.Image.open(image) as im:   # the record's own size (the toy's is its trained size)
        width, height = im.size
    r = actors.Editor(pipe, policy).edit(image, record["instruction"], seed=0, steps=steps, cache=cache or None,
                                         height=height, width=width)
    return {"pixels": r.pixels, "seconds": r.seconds, "cpu_seconds": time.process_time() - cpu0, "trace": r.trace,
            "skipped": sum(r.cache_skipped_calls.values()), "keep": r.keep_ratio_mean,
            "query": r.query_ratio_mean, "source_cached": r.source_cached, "result": r}


def record_values(r: dict[str, Any], full_pixels: np.ndarray, target: np.ndarray, reference_seconds: float,
                  arch: Any, text: tuple[int, ...]) -> dict[str, float]:
    """One record's numbers for one configuration's result `r` (from `run_config`): squared errors against the
    uncached `full` edit and the exact target, skipped calls, kept shares, FLOP-ideal speedup on `arch` (SpotEdit's
    condition cache priced as cached) and the speedup over `reference_seconds` (the paired uncached edit)."""
    return {"mse_full": mse(r["pixels"], full_pixels), "mse_target": mse(r["pixels"], target),
            "skipped": r["skipped"], "keep": r["keep"], "query": r.get("query", 1.0),
            "flop_speedup": flops.predicted_speedup(arch, r["trace"], text, r.get("source_cached", False)),
            "measured_speedup": reference_seconds / r["seconds"]}


def compare(model: str = "toy-flux-kontext-v2", configs: tuple[str, ...] = DEFAULT_CONFIGS, steps: int = 28,
            records: int | None = None) -> list[dict[str, Any]]:
    import torch

    import actors

    torch.set_num_threads(1)   # paired timings on a shared CPU: one thread each
    pipe = actors.load_pipeline(model, device="cpu")
    manifest = [json.loads(line) for line in (CONFIGS / "demo_manifest.jsonl").read_text().splitlines()
                if line.strip()][:records]
    kontext = real("FLUX.1-Kontext-dev")
    arch, text = kontext.arch, kontext.text()
    out: dict[str, dict[str, list[float]]] = {c: {} for c in configs}
    for record in manifest:
        target = np.asarray(PIL.Image.open(CONFIGS / record["target"]).convert("RGB"), np.float64) / 255
        full = run_config(pipe, "full|", record, steps)
        for config in configs:
            r = full if config == "full|" else run_config(pipe, config, record, steps)
            # paired: the same record's uncached edit (ours: the full policy through our loop; a peer: the
            # pipeline's own __call__ without the peer), whole edit, encode and decode included
            values = record_values(r, full["pixels"], target, r.get("reference_seconds", full["seconds"]), arch, text)
            values.pop("query")
            for k, v in values.items():
                out[config].setdefault(k, []).append(v)
    rows = []
    for config, values in out.items():
        row = {"config": config}
        for k, v in values.items():
            row[k] = statistics.median(v) if k == "measured_speedup" else float(np.mean(v))
        # PSNR of the mean squared error over the records (identical edits count as 0 error, not as inf)
        row["psnr_full"], row["psnr_target"] = psnr_of(row.pop("mse_full")), psnr_of(row.pop("mse_target"))
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], steps: int) -> str:
    lines = [f"| configuration (policy\\|cache) | skipped calls of {steps} | source kept | PSNR vs full (dB) | "
             "PSNR vs target (dB) | FLOP-ideal speedup, Kontext-dev | measured speedup (median) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['skipped']:.1f} | {r['keep']:.2f} | {r['psnr_full']:.1f} | "
                     f"{r['psnr_target']:.1f} | {r['flop_speedup']:.2f}× | {r['measured_speedup']:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy-flux-kontext-v2")
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--records", type=int, default=None)
    p.add_argument("--config", action="append", default=None, help='"POLICY[k=v;...]|CACHE" or "peer:NAME[k=v]|"')
    args = p.parse_args(argv)
    rows = compare(args.model, tuple(args.config or DEFAULT_CONFIGS), args.steps, args.records)
    print(table(rows, args.steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
