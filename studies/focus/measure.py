"""One configuration on one record: fidelity to the uncached `full` edit (PSNR, SSIM, LPIPS where its weights load),
the edit against the exact target (inside the mask), the background against the source, what was skipped, the
FLOP-ideal speedup on the toy and projected onto the real models, and (paired records) the CPU-time ratio."""
from __future__ import annotations

from typing import Any

import numpy as np

from costs import flops, real
from costs.ideal_speedup import project
from metrics.pixel import fidelity_metrics, psnr
from studies.cache import compare
from studies.cache.run import Record, background_mse

from .records import is_local

# the real models the plans are priced on, and the sizes they are projected to
PROJECTIONS = (("kontext", "FLUX.1-Kontext-dev"), ("qwen", "Qwen-Image-Edit"))
SIZES = (1024, 2048)


def projected(trace: list[Any], source_cached: bool) -> dict[str, float]:
    """`flop_<model>_<size>`: the trace's shares priced on each real model at each size. A one-call toy trace is
    priced on Qwen-Image-Edit with both true-CFG calls deciding as the toy's call did (our caches decide alike
    per branch)."""
    out = {}
    for key, name in PROJECTIONS:
        priced = real(name)
        text = priced.text()
        for size in SIZES:
            steps = project(trace, flops.image_tokens(size))
            for s in steps:
                calls = tuple(s.cache_calls)
                s.cache_calls = calls * len(text) if len(calls) == 1 else calls
            out[f"flop_{key}_{size}"] = flops.predicted_speedup(priced.arch, steps, text, source_cached)
    return out


def toy_speedup(pipe: Any, r: dict[str, Any]) -> float:
    """The plan priced on the toy transformer itself, with the text tokens its calls had (a peer's edit, run by
    the pipeline's own call: the model's prompt length)."""
    from actors.model_defaults import defaults_of

    result = r.get("result")
    text = result.text_tokens if result is not None else (defaults_of(pipe).max_sequence_length,)
    return flops.predicted_speedup(flops.arch_of(pipe.transformer), r["trace"], text, r["source_cached"])


def edit_psnr(pixels: np.ndarray, record: Record) -> float | None:
    """PSNR against the exact target inside the mask (None without a mask)."""
    if record.mask is None:
        return None
    return psnr(pixels, record.target, record.mask)


def quality(pixels: np.ndarray, record: Record, lpips: Any) -> dict[str, Any]:
    full = record.full_pixels
    fid = fidelity_metrics(pixels, full)
    out = {"mse_full": float(np.mean((pixels - full) ** 2)), "ssim_full": fid["ssim_vs_full"],
           "mse_target": float(np.mean((pixels - record.target) ** 2)), "psnr_edit": edit_psnr(pixels, record),
           "psnr_edit_full": edit_psnr(full, record), "mse_bg": background_mse(pixels, record),
           "mse_bg_full": background_mse(full, record)}
    if lpips is not None:
        from metrics.lpips_model import lpips_distance

        out["lpips_full"] = lpips_distance(lpips, pixels, full)
    return out


def measure(pipe: Any, config: str, record: Record, steps: int, lpips: Any = None, paired: bool = False,
            config_first: bool = False) -> dict[str, Any]:
    """One row. `paired`: an uncached `full` edit of the same record runs back to back with it (after it when
    `config_first`), on the same thread, and the CPU-time ratio is recorded."""
    def full() -> dict[str, Any]:
        return compare.run_config(pipe, "full|", record.spec, steps, record.base)

    reference = full() if paired and not config_first else None
    r = compare.run_config(pipe, config, record.spec, steps, record.base)
    if paired and config_first:
        reference = full()
    if record.full_pixels is None:
        record.full_pixels = (reference or (r if config == "full|" else full()))["pixels"]
    row = {"config": config, "record": record.id, "category": record.spec.get("category"),
           "local": is_local(record.spec.get("category")), "skipped": r["skipped"], "keep": r["keep"],
           "query": r.get("query", 1.0), "cpu_seconds": r["cpu_seconds"],
           "flop_toy": toy_speedup(pipe, r),
           **projected(r["trace"], r["source_cached"]), **quality(r["pixels"], record, lpips)}
    result = r.get("result")
    if result is not None:
        row["policy_summary"] = result.policy_summary
    if reference is not None:
        row["cpu_speedup"] = reference["cpu_seconds"] / r["cpu_seconds"]
        row["reference_cpu_seconds"] = reference["cpu_seconds"]
    return row


def load_lpips() -> tuple[Any, str | None]:
    """LPIPS (squeeze, as PIE-Bench) where its weights are on this machine; else None and why."""
    from metrics.lpips_model import LpipsUnavailable
    from metrics.lpips_model import load_lpips as load

    try:
        return load("squeeze"), None
    except LpipsUnavailable as exc:
        return None, str(exc)

