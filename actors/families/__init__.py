"""Model families: one package each (adapter, attention processors, positions, VAE access); the engine
looks a family up by pipeline or by name and never switches on the name itself."""
from __future__ import annotations

from typing import Any

from diffusers import FluxKontextPipeline, QwenImageEditPipeline, QwenImageEditPlusPipeline

from .family import Family
from .flux_kontext import FLUX_KONTEXT
from .qwen_image_edit import QWEN_IMAGE_EDIT

FAMILIES: dict[str, Family] = {f.name: f for f in (FLUX_KONTEXT, QWEN_IMAGE_EDIT)}
PIPELINES: tuple[tuple[type, Family], ...] = ((FluxKontextPipeline, FLUX_KONTEXT),
                                              (QwenImageEditPipeline, QWEN_IMAGE_EDIT),
                                              (QwenImageEditPlusPipeline, QWEN_IMAGE_EDIT))


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; accepted: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(pipe: Any) -> Family:
    for cls, fam in PIPELINES:
        if isinstance(pipe, cls):
            return fam
    raise TypeError(f"unsupported pipeline {type(pipe).__name__}; accepted: "
                    f"{', '.join(cls.__name__ for cls, _ in PIPELINES)}")


__all__ = ["FAMILIES", "Family", "family", "family_of"]
