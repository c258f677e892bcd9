"""What every model adapter gives the sampling loop, and the per-edit inputs it prepares."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

import numpy as np
import PIL.Image
import torch
from diffusers.pipelines.flux.pipeline_flux_kontext import calculate_shift, retrieve_timesteps


class EditInputError(ValueError):
    """Input that cannot be edited (empty instruction, unusable size, unreadable image)."""


@dataclass
class EditInputs:
    """Everything one edit needs, prepared once before the loop. Belongs to that edit only."""

    latents: torch.Tensor                      # [1, num_noisy, C] initial noise, packed
    source: torch.Tensor                       # [1, num_source, C] packed latents of all references
    noisy_grid: tuple[int, int]
    source_grids: tuple[tuple[int, int], ...]  # first reference is encoded at the output size
    height: int
    width: int
    scheduler: Any                             # a fresh scheduler owned by this edit
    timesteps: torch.Tensor
    cond: dict[str, Any] = field(default_factory=dict)   # model-specific conditioning
    notes: list[str] = field(default_factory=list)       # adjustments the user should know about

    @property
    def sigmas(self) -> torch.Tensor:
        return self.scheduler.sigmas

    @property
    def aligned_source(self) -> torch.Tensor:
        """Source tokens of the first reference: one per noisy token, same order."""
        return self.source[:, : self.noisy_grid[0] * self.noisy_grid[1]]


class ModelAdapter(Protocol):
    family: str
    default_steps: int        # the family's paper protocol, used when an edit gives none
    default_guidance: float
    resize_filter: str        # PIL filter name for the source resize ("bicubic", "lanczos")

    def prepare(self, images: list[PIL.Image.Image], instruction: str, *, seed: int, steps: int,
                guidance_scale: float | None, height: int | None, width: int | None,
                max_sequence_length: int = 512, resize_filter: str | None = None) -> EditInputs: ...

    def attach(self, inputs: EditInputs) -> contextlib.AbstractContextManager[None]: ...

    def velocity(self, inputs: EditInputs, z: torch.Tensor, t: torch.Tensor,
                 keep: torch.Tensor | None) -> torch.Tensor: ...

    def decode(self, inputs: EditInputs, z: torch.Tensor) -> np.ndarray: ...


def round_size(height: int, width: int, multiple_of: int, notes: list[str]) -> tuple[int, int]:
    """Round down to the model's patch multiple, as diffusers does, and say so when it changes."""
    if height < multiple_of or width < multiple_of:
        raise EditInputError(
            f"size {width}x{height} is smaller than the model's patch of {multiple_of} pixels")
    h, w = height // multiple_of * multiple_of, width // multiple_of * multiple_of
    if (h, w) != (height, width):
        notes.append(f"size {width}x{height} rounded to {w}x{h} (multiple of {multiple_of})")
    return h, w


RESIZE_FILTERS = ("NEAREST", "BILINEAR", "BICUBIC", "LANCZOS", "BOX", "HAMMING")


def resize(image: PIL.Image.Image, height: int, width: int, filter_name: str) -> PIL.Image.Image:
    """The source at (height, width) with the named PIL filter; unchanged when it already has that size."""
    if filter_name.upper() not in RESIZE_FILTERS:
        raise EditInputError(f"unknown resize filter {filter_name!r}; accepted: {', '.join(f.lower() for f in RESIZE_FILTERS)}")
    if image.size == (width, height):
        return image
    return image.resize((width, height), getattr(PIL.Image.Resampling, filter_name.upper()))


def flow_schedule(pipe: Any, image_seq_len: int, steps: int, device: Any) -> tuple[Any, torch.Tensor]:
    """A scheduler that no other edit touches, set up as both pipelines' `__call__` do: sigmas linear from 1
    to 1/steps, shifted by mu for the noisy sequence length (`calculate_shift`, the same in both)."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    c = scheduler.config
    mu = calculate_shift(image_seq_len, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                         c.get("base_shift", 0.5), c.get("max_shift", 1.15))
    timesteps, _ = retrieve_timesteps(scheduler, steps, device, sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    scheduler.set_begin_index(0)
    return scheduler, timesteps


@contextlib.contextmanager
def no_hooks() -> Iterator[None]:
    yield
