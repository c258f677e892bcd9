"""What the cost model prices a model as: the real architecture its registry entry names (`actors.models`),
so a model the registry knows is a model the cost model knows (the toy and tiny models cost as the real
checkpoint of their family)."""
from __future__ import annotations

from dataclasses import dataclass

from actors.families import Architecture
from actors.models import MODELS, model

from .flops import Arch, arch_from_config


@dataclass(frozen=True)
class Priced:
    """An architecture as the FLOP model reads it, with the text tokens of its calls."""

    arch: Arch
    architecture: Architecture

    @property
    def name(self) -> str:
        return self.architecture.name

    def text(self, references: int = 1, guidance_scale: float | None = None) -> tuple[int, ...]:
        """Text tokens of each transformer call of one step; true CFG's second call is off at guidance <= 1."""
        text = tuple(self.architecture.text_tokens(references))
        if self.architecture.true_cfg and guidance_scale is not None and guidance_scale <= 1:
            return text[:1]
        return text


def _priced(architecture: Architecture) -> Priced:
    return Priced(arch_from_config(architecture.transformer, architecture.name), architecture)


def for_model(model_name: str) -> Priced:
    """The architecture a model name is priced as (an unknown name: the registry's error, with the names)."""
    return _priced(model(model_name).architecture)


def architectures() -> dict[str, Architecture]:
    """Every real architecture a registered model is priced as, by name."""
    return {spec.architecture.name: spec.architecture for spec in MODELS.values()}


def real(name: str) -> Priced:
    """A real architecture by name ("FLUX.1-Kontext-dev", "Qwen-Image-Edit", "Qwen-Image-Edit-Plus")."""
    known = architectures()
    if name not in known:
        raise ValueError(f"no real architecture {name!r}; known: {', '.join(known)}")
    return _priced(known[name])
