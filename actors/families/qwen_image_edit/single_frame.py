"""Qwen-Image's VAE is a causal video VAE: every convolution is a `QwenImageCausalConv3d` that pads time with
2·p zero frames *before* the input. For one frame without a frame cache (SpotEdit's selector scores a still
image), the only kernel tap that meets data is the last one, so the 3D convolution equals a 2D convolution
with the kernel's last temporal slice: exact, and a third of the work of a 3×3×3 kernel (the zero frames are
multiplied otherwise).

`single_frame_convs(module)` routes every causal convolution under `module` through that 2D path while the
context is open (a one-frame, uncached input only; anything else runs the stock forward), per instance, and
restores the stock forward afterwards whatever happens.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F


def _last_tap(conv: torch.nn.Conv3d, stock: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    w_pad, h_pad = conv._padding[0], conv._padding[2]   # (w, w, h, h, 2·t, 0): time is padded before only

    def forward(x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[2] != 1 or cache_x is not None or conv.stride[0] != 1:
            return stock(x, cache_x)
        frame = F.pad(x[:, :, 0], (w_pad, w_pad, h_pad, h_pad))
        out = F.conv2d(frame, conv.weight[:, :, -1], conv.bias, conv.stride[1:], 0, conv.dilation[1:], conv.groups)
        return out[:, :, None]

    return forward


@contextlib.contextmanager
def single_frame_convs(module: torch.nn.Module) -> Iterator[None]:
    from diffusers.models.autoencoders.autoencoder_kl_qwenimage import QwenImageCausalConv3d

    patched: list[tuple[Any, Any]] = []
    try:
        for conv in module.modules():
            if isinstance(conv, QwenImageCausalConv3d):
                patched.append((conv, conv.__dict__.get("forward")))
                conv.forward = _last_tap(conv, conv.forward)
        yield
    finally:
        for conv, own in patched:
            if own is None:
                del conv.forward
            else:
                conv.forward = own
