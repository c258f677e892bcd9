"""One attention call that also returns each query's log-sum-exp (what the attention statistics need).

The statistics processors (`actors.families.*.attention`) use this output as the layer's own attention, so a
recorded layer runs one attention, not two. torch 2.14's fused kernels return the log-sum-exp beside the
output: `_scaled_dot_product_flash_attention_for_cpu` (the kernel `F.scaled_dot_product_attention` picks on the
CPU, so the output is bitwise the stock one there), `_scaled_dot_product_flash_attention` (CUDA, fp16/bf16, no
mask) and `_scaled_dot_product_efficient_attention` (CUDA, fp32). Anything else (a key mask on CUDA, another
device, a kernel refusing its inputs) takes `attention_with_own_lse`: the stock call plus the log-sum-exp in
chunks of queries, a second pass over the keys that our edit path never takes (diffusers drops an all-ones
text mask before the transformer).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LSE_CHUNK = 1024   # queries per chunk of fp32 logits in the fallback


def key_bias(key_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """[B, N] key mask (True = attend) as the additive [B, 1, 1, N] bias SDPA makes of a boolean mask."""
    if key_mask is None:
        return None
    bias = torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device)
    return bias.masked_fill(~key_mask.bool(), float("-inf"))[:, None, None, :]


def attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q·kᵀ/√D)·v over [B, N, H, D] inputs, as [B, N, H, D] in q's dtype, and the fp32 log-sum-exp
    [B, H, N] of each query's scaled logits (masked keys excluded)."""
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))   # [B, H, N, D], the layout the kernels take
    scale = q.shape[-1] ** -0.5
    bias = key_bias(key_mask, q.dtype)
    try:
        fused = _fused(qt, kt, vt, bias, scale)
    except RuntimeError:   # a kernel that refuses these inputs (head size, architecture): the general path
        fused = None
    if fused is None:
        return attention_with_own_lse(q, k, v, key_mask)
    out, lse = fused
    return out.transpose(1, 2), lse[..., : q.shape[1]].float()   # efficient attention pads lse's last dim


def _fused(qt: torch.Tensor, kt: torch.Tensor, vt: torch.Tensor, bias: torch.Tensor | None, scale: float
           ) -> tuple[torch.Tensor, torch.Tensor] | None:
    aten = torch.ops.aten
    if qt.device.type == "cpu":
        out, lse = aten._scaled_dot_product_flash_attention_for_cpu(qt, kt, vt, attn_mask=bias, scale=scale)
        return out, lse
    if qt.device.type != "cuda" or bias is not None:
        return None
    if qt.dtype in (torch.float16, torch.bfloat16) and qt.shape[-1] <= 256:
        out, lse = aten._scaled_dot_product_flash_attention(qt, kt, vt, scale=scale)[:2]
        return out, lse
    if qt.dtype == torch.float32:
        out, lse = aten._scaled_dot_product_efficient_attention(qt, kt, vt, None, True, scale=scale)[:2]
        return out, lse
    return None


def attention_with_own_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None,
                           chunk: int = LSE_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """The general path: the stock SDPA call, and the log-sum-exp computed here in fp32, `chunk` queries at a
    time (O(chunk·N) memory per head)."""
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    mask = None if key_mask is None else key_mask.bool()[:, None, None, :]
    out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask)
    scale = q.shape[-1] ** -0.5
    keys_t = kt.float().transpose(-1, -2)                     # [B, H, D, N]
    bias = key_bias(key_mask, torch.float32)
    lse = torch.empty(qt.shape[:3], dtype=torch.float32, device=q.device)
    for start in range(0, qt.shape[2], chunk):
        logits = (qt[:, :, start: start + chunk].float() * scale) @ keys_t
        lse[:, :, start: start + chunk] = torch.logsumexp(logits if bias is None else logits + bias, dim=-1)
    return out.transpose(1, 2), lse
