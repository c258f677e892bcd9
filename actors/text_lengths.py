"""Text tokens of every transformer call of an edit: what the cost model prices each call with."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch


@contextlib.contextmanager
def text_lengths(transformer: torch.nn.Module) -> Iterator[list[int]]:
    """Text tokens of every transformer call made inside the block, in call order (a call a temporal cache
    serves counts too: torch's pre-hooks run before diffusers' hooked forward)."""
    seen: list[int] = []

    def hook(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        text = kwargs.get("encoder_hidden_states")
        if text is not None:
            seen.append(int(text.shape[1]))

    handle = transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()
