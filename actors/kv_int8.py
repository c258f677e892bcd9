"""An 8-bit store for SpotEdit's post-RoPE K/V buffers (`SpotKV.store = "int8"`): half the memory of the
compute dtype, for the configurations that do not fit a card otherwise (Qwen-Image-Edit at 2048² keeps 48 GiB
of buffers for its two CFG branches).

Each row of each head (head_dim values) is stored as int8 with its own scale, absmax / 127 in fp32 (symmetric,
no zero point: keys and values are centred enough, and a row's scale follows its own magnitude). A call
dequantizes the layer's rows into one compute-dtype scratch per edit, shared by the layers (they run one after
the other), runs the buffers' logic on it unchanged, and stores the rows back: attention reads the scratch.
The cost: a dequantize and a quantize pass over the layer's K and V per call, priced by the roofline
(`costs.mechanism_kernels.spot_int8`); the error: one rounding per stored row and call (≤ scale / 2 per value).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

QMAX = 127


@dataclass
class Packed:
    """int8 rows [B, R, H, D] and their fp32 scales [B, R, H, 1], for keys and values."""

    qk: torch.Tensor
    sk: torch.Tensor
    qv: torch.Tensor
    sv: torch.Tensor

    @classmethod
    def like(cls, shape: tuple[int, ...], device: torch.device) -> "Packed":
        scales = (*shape[:-1], 1)
        return cls(torch.zeros(shape, dtype=torch.int8, device=device), torch.ones(scales, device=device),
                   torch.zeros(shape, dtype=torch.int8, device=device), torch.ones(scales, device=device))

    def move_rows(self, other: "Packed", dst: slice, src: slice) -> None:
        """Copy rows `src` of `other` into rows `dst` of this store (a new text length moved the image rows)."""
        for mine, theirs in ((self.qk, other.qk), (self.sk, other.sk), (self.qv, other.qv), (self.sv, other.sv)):
            mine[:, dst].copy_(theirs[:, src])


def quantize_into(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> None:
    """Rows `x` [B, r, H, D] into int8 `q` and fp32 `scale` [B, r, H, 1] (views of the store), in place."""
    scale.copy_(x.abs().amax(dim=-1, keepdim=True))
    scale.div_(QMAX).clamp_(min=torch.finfo(torch.float32).tiny)
    q.copy_((x.float() / scale).round_().clamp_(-QMAX, QMAX))


def dequantize_into(q: torch.Tensor, scale: torch.Tensor, out: torch.Tensor) -> None:
    """int8 rows and their scales into `out` (the compute dtype), in place."""
    out.copy_(q)
    out.mul_(scale.to(out.dtype))


def pack(packed: Packed, k: torch.Tensor, v: torch.Tensor, rows: slice = slice(None)) -> None:
    quantize_into(k[:, rows], packed.qk[:, rows], packed.sk[:, rows])
    quantize_into(v[:, rows], packed.qv[:, rows], packed.sv[:, rows])


def unpack(packed: Packed, k: torch.Tensor, v: torch.Tensor) -> None:
    dequantize_into(packed.qk, packed.sk, k)
    dequantize_into(packed.qv, packed.sv, v)
