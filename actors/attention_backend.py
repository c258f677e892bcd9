"""The attention backend an edit runs on: chosen at load (`set_attention_backend`, diffusers' dispatcher) and
recorded per row, since the same plan can run 1.5-2x apart on FlashAttention 3, cuDNN or the math kernel.

Our own partial-attention processors (`actors.families.*.attention`) call `dispatch_attention_fn` with the
backend of the processor they replace, so a backend set on the transformer holds for SpotEdit's partial calls.
The layers that record attention statistics (ToPi, Sparse Context) are the exception: they need each query's
log-sum-exp, which the dispatcher does not return, so those layers run torch's own kernels
(`actors.attention_lse`) whatever the backend; every other layer keeps it."""
from __future__ import annotations

import torch


def backend_names() -> tuple[str, ...]:
    """Every backend diffusers' dispatcher knows (whether this machine has its kernels is checked on use)."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    return tuple(b.value for b in AttentionBackendName)


def set_backend(transformer: torch.nn.Module, name: str) -> None:
    """Set `name` on every attention processor; an unknown name or a backend this machine cannot run (its
    package missing, a CUDA-only kernel on the CPU) raises before any edit."""
    if name not in backend_names():
        raise ValueError(f"unknown attention backend {name!r}; accepted: {', '.join(backend_names())}")
    transformer.set_attention_backend(name)


def backend_label(transformer: torch.nn.Module) -> str:
    """What the row records: the backend set on the processors, else diffusers' active one (with "default"),
    and on CUDA the SDPA kernels torch may pick for "native"."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    set_on = {getattr(p, "_attention_backend", None) for p in transformer.attn_processors.values()} - {None}
    if set_on:
        label = "+".join(sorted(str(getattr(b, "value", b)) for b in set_on))
    else:
        name, _ = _AttentionBackendRegistry.get_active_backend()
        label = f"{getattr(name, 'value', name)} (default)"
    if label.startswith("native") and torch.cuda.is_available():
        cuda = torch.backends.cuda
        kernels = [k for k, on in (("flash", cuda.flash_sdp_enabled()), ("efficient", cuda.mem_efficient_sdp_enabled()),
                                   ("cudnn", cuda.cudnn_sdp_enabled()), ("math", cuda.math_sdp_enabled())) if on]
        label += f" sdpa:{','.join(kernels)}"
    return label

