"""`torch.compile` on the repeated transformer blocks, their own compute only.

Each block's `forward` is replaced by its compiled version before any per-edit hook is attached, so that the
hooks diffusers' `HookRegistry` wraps around `forward` later (routing, temporal caches, the adapter's) run
eagerly outside the compiled region: the routing hook's layer index and the per-layer caches they look up are
never traced, and one compiled graph per block class serves every block (no guard tells the blocks apart).
Inside the block, the per-layer K/V bookkeeping of partial attention is kept out of the graph as well
(`actors.spot_buffers`: `store_full`, `partial_keys` are not traced).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

from .routing import transformer_layers


def compile_blocks(transformer: torch.nn.Module, **options: Any) -> list[torch.nn.Module]:
    """Compile every block's own `forward` in place (`torch.compile(**options)`, e.g. dynamic=True,
    backend="inductor"); hooks registered afterwards wrap the compiled forward. Returns the blocks."""
    blocks = transformer_layers(transformer)
    for block in blocks:
        if not _plain(block):
            raise RuntimeError(f"{type(block).__name__} already has a replaced forward (compiled, or a hook "
                               "attached): compile the blocks before any hook is registered")
        block.forward = torch.compile(block.forward, **options)
    return blocks


def _plain(block: torch.nn.Module) -> bool:
    """The block runs its class's forward: none set on it, or the one diffusers' hooks put back when removed."""
    forward = vars(block).get("forward")
    return forward is None or getattr(forward, "__func__", None) is type(block).forward


def uncompile_blocks(transformer: torch.nn.Module) -> None:
    """Back to the class's forward on every block (no hook may be attached)."""
    for block in transformer_layers(transformer):
        vars(block).pop("forward", None)


@contextlib.contextmanager
def compiled_blocks(transformer: torch.nn.Module, **options: Any) -> Iterator[list[torch.nn.Module]]:
    """`compile_blocks` for the duration of a `with` (a benchmark, a test); the class's forward afterwards."""
    blocks = compile_blocks(transformer, **options)
    try:
        yield blocks
    finally:
        uncompile_blocks(transformer)
