"""Word order for the toy's frozen T5 (issue 29's pilot N and `text_order` in a toy config).

FLUX's transformer gives every text token the same RoPE position, so its attention sees the T5 outputs as a
set: whatever word order the instruction has must already be inside each token's vector. The toy's T5 is one
random layer whose relative-position biases are ±0.3, so its attention is nearly uniform and order moves a
token's vector by 1–5 % ("make the blue diamond orange" and "make the orange diamond blue" are almost the same
set), while recolor needs to know which colour is the object's and which the new one. Here the biases are set
so that head 0 reads the previous word and head 1 the next one: every token then carries its neighbours
(bigrams), which tells the two colours apart. Nothing else of the encoder changes, and it stays frozen.
"""
from __future__ import annotations

from typing import Any

import torch


def _bucket(attention: Any, relative: int) -> int:
    return int(attention._relative_position_bucket(
        torch.tensor([relative]), bidirectional=not attention.is_decoder,
        num_buckets=attention.relative_attention_num_buckets,
        max_distance=attention.relative_attention_max_distance))


def _ordered(attention: Any, strength: float) -> torch.Tensor:
    """The bias table (buckets x heads) in which head h reads the word at offset (-1, +1)[h]."""
    table = torch.zeros_like(attention.relative_attention_bias.weight.detach())
    for head, offset in enumerate((-1, +1)[: table.shape[1]]):
        table[_bucket(attention, offset), head] = strength
    return table


@torch.no_grad()
def order_text_encoder(t5: Any, strength: float = 8.0) -> None:
    """Set the T5 encoder's relative-position biases: head h reads the word at offset (-1, +1)[h], `strength`
    logits above every other position (about e^8 ≈ 3000 times the weight); heads past the second keep zero."""
    attention = t5.encoder.block[0].layer[0].SelfAttention
    attention.relative_attention_bias.weight.copy_(_ordered(attention, strength))


def text_order_of(t5: Any) -> float | None:
    """The bias `order_text_encoder` set on this encoder, or None when its biases are not that pattern (the
    seeded encoder): what a saved model's card reads, whatever its training log says."""
    attention = t5.encoder.block[0].layer[0].SelfAttention
    bias = attention.relative_attention_bias.weight.detach()
    strength = float(bias.max())
    return strength if strength > 0 and torch.equal(bias, _ordered(attention, strength)) else None
