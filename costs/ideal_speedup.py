"""The FLOP-ideal speedup of one edit, twice: its plan priced on the transformer that ran it, and the same plan's
shares priced on the real model of its family at 1024² (what every row and JSON line carries).

The projection keeps every share of the edit's trace — source tokens kept, noisy tokens computed, keys, calls and
blocks a cache skipped, per step — and scales the token counts to the real model's at 1024² (4096 noisy tokens,
as many per reference): what the same decisions would cost there, not a measurement of the real model's
decisions (which would differ: the toy's regions, skips and kept sets are the toy's)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Iterable

import torch

from .architectures import for_model
from .flops import arch_of, image_tokens, predicted_speedup
from .kernels import modelled
from .roofline import DEFAULT_DEVICE, STATIC_CONTEXT_POLICIES, roofline_speedup

PROJECTED_SIZE = 1024


def project(trace: Iterable[Any], noisy: int = image_tokens(PROJECTED_SIZE)) -> list[SimpleNamespace]:
    """The trace with every token count scaled to `noisy` noisy tokens, the same shares kept, computed and
    skipped."""
    out = []
    for s in trace:
        k = noisy / s.noisy

        def n(v: int | None) -> int | None:
            return None if v is None else round(v * k)

        out.append(SimpleNamespace(noisy=noisy, total=n(s.total), kept=n(s.kept), active=n(getattr(s, "active", None)),
                                   keys=n(getattr(s, "keys", None)), from_layer=getattr(s, "from_layer", 0),
                                   cache_calls=tuple(getattr(s, "cache_calls", ()))))
    return out


def own_speedup(result: Any, transformer: torch.nn.Module) -> float | None:
    """The edit's plan priced on the transformer that ran it (its config, its text tokens); None without a trace
    or a recorded text length."""
    if not result.trace or not result.text_tokens:
        return None
    return predicted_speedup(arch_of(transformer), result.trace, result.text_tokens, result.source_cached)


def real_speedup(result: Any, model_name: str) -> float | None:
    """The same plan's shares priced on the real architecture `model_name` is priced as (the toy and tiny models:
    their family's real checkpoint), at 1024², with as many calls per step as the edit made."""
    if not result.trace or not result.text_tokens:
        return None
    priced = for_model(model_name)
    text = priced.text(references=len(result.trace[0].keep_masks))[: len(result.text_tokens)]
    return predicted_speedup(priced.arch, project(result.trace), text, result.source_cached)


def roofline_real_speedup(result: Any, model_name: str, policy: str | None = None,
                          device: str = DEFAULT_DEVICE) -> float | None:
    """The same projection priced on the roofline of `device` (`costs.roofline`: bytes moved as well as FLOPs);
    SpotFusion's blend unless `policy` reads a static context. None where the roofline does not model the
    family's blocks (FLUX.2). Attention statistics and a cache's bookkeeping are not in the trace: not priced."""
    if not result.trace or not result.text_tokens:
        return None
    priced = for_model(model_name)
    if not modelled(priced.arch):
        return None
    text = priced.text(references=len(result.trace[0].keep_masks))[: len(result.text_tokens)]
    return roofline_speedup(priced.arch, project(result.trace), text, result.source_cached, device,
                            blend=(policy or "") not in STATIC_CONTEXT_POLICIES)


def ideal_columns(result: Any, transformer: torch.nn.Module, model_name: str,
                  policy: str | None = None) -> dict[str, float | None]:
    """`flops_ideal_speedup`, `flops_ideal_speedup_real` and `roofline_speedup_real` (H100 SXM) of one edit."""
    return {"flops_ideal_speedup": own_speedup(result, transformer),
            "flops_ideal_speedup_real": real_speedup(result, model_name),
            "roofline_speedup_real": roofline_real_speedup(result, model_name, policy)}
