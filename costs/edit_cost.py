"""The cost of one edit at full context, from the model name alone: what the dry run, the simulation and
anything planning GPU time multiply out."""
from __future__ import annotations

from dataclasses import dataclass

from .architectures import for_model
from .flops import call_flops, image_tokens

DEFAULT_GPU_TFLOPS = 400.0   # assumption: an H100's effective bf16 rate on large matmuls (peak dense is ~990)


@dataclass(frozen=True)
class EditCost:
    architecture: str
    steps: int
    calls_per_step: int
    tokens: int            # image tokens of the output (= of the aligned source)
    text: tuple[int, ...]  # text tokens of each call of a step
    flops: float           # one edit


def edit_cost(model_name: str, height: int, width: int, steps: int, guidance_scale: float | None,
              keep: float = 1.0) -> EditCost:
    """FLOPs of one edit of `model_name` (priced as its family's real architecture) at (height, width), one
    reference image, with a share `keep` of the source tokens (1: full context)."""
    priced = for_model(model_name)
    text = priced.text(references=1, guidance_scale=guidance_scale)   # the count is per record, unknown here
    n = image_tokens(height, width)
    kept = n if keep >= 1 else round(keep * n)
    per_step = sum(call_flops(priced.arch, t, n, n, kept=kept).total for t in text)
    return EditCost(priced.name, steps, len(text), n, text, per_step * steps)


def gpu_seconds(flops: float, gpu_tflops: float = DEFAULT_GPU_TFLOPS) -> float:
    """Seconds of one GPU at a sustained `gpu_tflops` (an assumption, not a measurement)."""
    if gpu_tflops <= 0:
        raise ValueError(f"gpu_tflops must be > 0, got {gpu_tflops}")
    return flops / (gpu_tflops * 1e12)
