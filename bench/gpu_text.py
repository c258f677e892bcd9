"""The real text length for the benchmark transformer. The tiny Qwen2.5-VL encoder of the benchmark pipeline
sees the source at the tiny processor's size and gives ~80 text tokens; the real Qwen-Image-Edit gives 1,389
for the prompt and 1,377 for the negative prompt of true CFG (1,369 vision tokens of the source at ~1024² area,
actors/families/qwen_image_edit/architecture.py). Attention and the text stream's linears grow with it, so
Qwen's speedups on the short text would overstate the real ones.

`pad_prompts` wraps the pipeline's `encode_prompt` (which the Qwen adapter calls once for the prompt and once
for the negative prompt, actors/families/qwen_image_edit/adapter.py) so that the embeddings are repeated
cyclically up to the real length: the transformer sees the real count of text tokens, the token values stay
those of the encoder. An all-ones mask stays None, as diffusers leaves it, so no mask reaches SDPA. FLUX.1's
T5 and FLUX.2's Qwen3 pad to 512 tokens in the tiny pipelines as in the real ones: nothing to do."""
from __future__ import annotations

from typing import Any

import torch

from costs.architectures import real

REAL_TEXT = {"qwen": "Qwen-Image-Edit"}   # families whose tiny text encoder gives fewer tokens than the real one


def real_lengths(family: str) -> tuple[int, ...] | None:
    """Text tokens of the real model's calls of one step (prompt, negative prompt), or None: nothing padded."""
    return real(REAL_TEXT[family]).text(1) if family in REAL_TEXT else None


def repeat_to(x: torch.Tensor, length: int) -> torch.Tensor:
    """`x` ([batch, tokens, ...]) with its tokens repeated cyclically to `length` (cut when longer)."""
    index = torch.arange(length, device=x.device) % x.shape[1]
    return x.index_select(1, index)


class PaddedPrompts:
    """`pipe.encode_prompt` for the Qwen adapter, its embeddings at the real lengths; `encoded` keeps the
    encoder's own lengths of the last edit's calls (prompt first), for the record."""

    def __init__(self, pipe: Any, prompt_tokens: int, negative_tokens: int, negative_prompt: str) -> None:
        self.original, self.negative_prompt = pipe.encode_prompt, negative_prompt
        self.lengths = (prompt_tokens, negative_tokens)
        self.encoded: list[int] = []

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        embeds, mask = self.original(*args, **kwargs)
        negative = kwargs.get("prompt") == self.negative_prompt
        if not negative:
            self.encoded = []
        self.encoded.append(int(embeds.shape[1]))
        length = self.lengths[1 if negative else 0]
        return repeat_to(embeds, length), None if mask is None else repeat_to(mask, length)


def pad_prompts(pipe: Any, family: str) -> PaddedPrompts | None:
    """Make `pipe` (a benchmark pipeline of `family`) give the real model's text lengths; None: already so."""
    lengths = real_lengths(family)
    if lengths is None:
        return None
    from actors.families.qwen_image_edit.adapter import NEGATIVE_PROMPT

    padded = PaddedPrompts(pipe, lengths[0], lengths[-1], NEGATIVE_PROMPT)
    pipe.encode_prompt = padded   # the instance attribute: only this pipeline, only this process
    return padded
