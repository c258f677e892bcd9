"""What a device run's timings depend on, recorded with every run: torch, diffusers, CUDA and cuDNN versions,
the GPU and its driver, which scaled-dot-product-attention kernels torch may use and which one it picks for
this run's attention shape (no mask, as the edit path calls it), and diffusers' attention backend."""
from __future__ import annotations

import subprocess
from typing import Any

import torch


def driver_version() -> str | None:
    """The NVIDIA driver, from nvidia-smi (None without one)."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def sdpa_choice(device: torch.device, dtype: torch.dtype, heads: int, head_dim: int, tokens: int = 1024) -> str:
    """The SDPA kernel torch picks for q = k = v of [1, heads, tokens, head_dim] without a mask (what diffusers'
    native backend calls in the edit path), by torch's own dispatcher (`torch._fused_sdp_choice`)."""
    q = torch.zeros(1, heads, tokens, head_dim, device=device, dtype=dtype)
    try:
        choice = torch._fused_sdp_choice(q, q, q)
        return torch.nn.attention.SDPBackend(choice).name
    except (RuntimeError, ValueError, AttributeError) as err:   # a private API: say so rather than fail the run
        return f"unknown ({type(err).__name__}: {err})"


def sdpa_flags() -> dict[str, bool]:
    """The kernels torch's SDPA may use (torch.backends.cuda; they gate the dispatcher on CUDA)."""
    cuda = torch.backends.cuda
    return {"flash": cuda.flash_sdp_enabled(), "mem_efficient": cuda.mem_efficient_sdp_enabled(),
            "math": cuda.math_sdp_enabled(), "cudnn": cuda.cudnn_sdp_enabled()}


def diffusers_backend(transformer: torch.nn.Module | None = None) -> dict[str, Any]:
    """diffusers' active attention backend and the backends set on the transformer's processors, if any
    (`set_attention_backend`; None = the active one)."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    name, _ = _AttentionBackendRegistry.get_active_backend()
    out: dict[str, Any] = {"active": getattr(name, "value", str(name))}
    if transformer is not None:
        set_on = {getattr(p, "_attention_backend", None) for p in transformer.attn_processors.values()}
        out["processors"] = sorted(str(getattr(b, "value", b)) for b in set_on)
    return out


def environment(device: torch.device, dtype: torch.dtype, heads: int, head_dim: int,
                transformer: torch.nn.Module | None = None) -> dict[str, Any]:
    """Versions, GPU, driver and attention kernels of a run on `device` in `dtype`."""
    import diffusers

    info: dict[str, Any] = {"torch": torch.__version__, "diffusers": diffusers.__version__,
                            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                            "device": str(device), "dtype": str(dtype).removeprefix("torch."),
                            "sdpa_enabled": sdpa_flags(),
                            "sdpa_choice": sdpa_choice(device, dtype, heads, head_dim),
                            "diffusers_attention_backend": diffusers_backend(transformer),
                            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=torch.cuda.get_device_name(device), capability=f"{props.major}.{props.minor}",
                    gpu_memory_gib=round(props.total_memory / 2**30, 1), driver=driver_version())
    return info
