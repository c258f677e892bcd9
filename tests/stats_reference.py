"""The attention statistics as they were computed before one attention call yielded them (a second attention
over the same q, k, v: fp32 Q·Kᵀ of the noisy queries against every key and a full-row softmax, in chunks):
the reference the new path is tested and benchmarked against."""
from __future__ import annotations

import torch


def source_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, text_len: int, num_noisy: int,
                     key_mask: torch.Tensor | None = None, chunk: int = 1024
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a joint sequence [text, noisy, source] ([B, N, H, D] each): mass [H, S] (Σ_b Σ_i softmax over all
    N keys, on the source keys), value_norm [H, S] and influence [H, S] (Σ_b ‖v_j‖·Σ_i A_ij)."""
    n, d = q.shape[1], q.shape[-1]
    first_source = text_len + num_noisy
    queries = q[:, text_len:first_source].float().transpose(1, 2) * d ** -0.5   # [B, H, G, D]
    keys_t = k.float().transpose(1, 2).transpose(-1, -2)                       # [B, H, D, N]
    bias = None
    if key_mask is not None:
        bias = torch.zeros(key_mask.shape, dtype=torch.float32, device=q.device)
        bias = bias.masked_fill(~key_mask.bool(), float("-inf"))[:, None, None, :]
    mass = torch.zeros(q.shape[0], q.shape[2], n - first_source, dtype=torch.float32, device=q.device)
    for start in range(0, num_noisy, chunk):
        logits = queries[:, :, start: start + chunk] @ keys_t   # [B, H, c, N]
        if bias is not None:
            logits = logits + bias
        mass += logits.softmax(dim=-1)[..., first_source:].sum(dim=-2)
    value_norm = v[:, first_source:].float().norm(dim=-1).transpose(1, 2)  # [B, H, S]
    return mass.sum(0), value_norm.sum(0), (mass * value_norm).sum(0)
