"""diffusers hooks that let Qwen-Image's transformer run on a subset of source tokens.

Qwen builds RoPE inside `forward` from `img_shapes`; `img_shapes` stays whole (so text positions do not
move) and a hook on `pos_embed` gathers the rows of the kept image tokens. With `zero_cond_t` the blocks get
a `modulate_index` of zeros (noisy) then ones (source): trimming it to the gathered length is exact.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from diffusers.hooks import HookRegistry, ModelHook

ROPE_HOOK = "dropedit_rope_rows"
MODULATE_HOOK = "dropedit_modulate_index"


@dataclass
class RowSelection:
    """The image-token rows of the current transformer call; None = all. One per edit."""

    rows: torch.Tensor | None = None


class GatherRopeRows(ModelHook):
    def __init__(self, selection: RowSelection) -> None:
        super().__init__()
        self.selection = selection

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        rows = self.selection.rows
        if rows is None:
            return output
        image_freqs, text_freqs = output
        return image_freqs.index_select(0, rows.to(image_freqs.device)), text_freqs


class TrimModulateIndex(ModelHook):
    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any):
        index = kwargs.get("modulate_index")
        if index is not None:
            kwargs["modulate_index"] = index[:, : kwargs["hidden_states"].shape[1]]
        return args, kwargs


@contextlib.contextmanager
def gathered_positions(transformer: torch.nn.Module, selection: RowSelection) -> Iterator[None]:
    """Install the hooks for one edit and remove them afterwards, whatever happens."""
    registries = [HookRegistry.check_if_exists_or_initialize(transformer.pos_embed)]
    registries[0].register_hook(GatherRopeRows(selection), ROPE_HOOK)
    if getattr(transformer.config, "zero_cond_t", False):
        for block in transformer.transformer_blocks:
            registry = HookRegistry.check_if_exists_or_initialize(block)
            registry.register_hook(TrimModulateIndex(), MODULATE_HOOK)
            registries.append(registry)
    try:
        yield
    finally:
        registries[0].remove_hook(ROPE_HOOK, recurse=False)
        for registry in registries[1:]:
            registry.remove_hook(MODULATE_HOOK, recurse=False)


def key_rotary(transformer: torch.nn.Module, img_shapes: list, device: torch.device) -> torch.Tensor:
    """Rotary rows of every image token [noisy, source] (independent of the text length)."""
    return transformer.pos_embed(img_shapes, max_txt_seq_len=1, device=device)[0]


def family_key_rotary(transformer: torch.nn.Module, cond: dict[str, Any], device: torch.device) -> torch.Tensor:
    """`Family.key_rotary`: the RoPE rows of every image token of an edit's conditioning."""
    return key_rotary(transformer, cond["img_shapes"], device)


def gather_rotary(emb: tuple[torch.Tensor, torch.Tensor], rows: torch.Tensor, kwargs: dict[str, Any]) -> tuple:
    """The block's (image rows, text rows) with the image rows gathered."""
    image_freqs, text_freqs = emb
    return image_freqs.index_select(0, rows), text_freqs
