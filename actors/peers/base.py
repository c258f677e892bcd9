"""What a peer is: validated parameters (a `core.registry.Plugin`, registered in `PEERS` by `name=`), a reason
it cannot run here (or None), and one edit through the diffusers pipeline's `__call__`."""
from __future__ import annotations

import abc
import contextlib
import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import PIL.Image
import torch

from core.registry import Plugin, PluginError, Registry

from ..adapter import resize
from ..editor import adapter_for, open_image
from ..model_defaults import defaults_of


class PeerError(PluginError):
    """A peer that cannot be built or cannot run here; the message says why."""


@dataclass
class PeerResult:
    image: PIL.Image.Image
    pixels: np.ndarray            # float RGB in [0, 1], [H, W, 3], as diffusers' output_type="np"
    height: int
    width: int
    seconds: float                # the pipeline call, device synchronised
    steps: int
    skipped_calls: dict[str, int] = field(default_factory=dict)   # per CFG branch: calls served from the cache
    stats: dict[str, Any] = field(default_factory=dict)           # the peer's own statistics
    params: dict[str, Any] = field(default_factory=dict)          # every parameter as applied
    notes: list[str] = field(default_factory=list)


# name -> peer class; filled by `Peer` subclasses declared with `name=...` (actors.peers imports them)
PEERS: Registry[Peer] = Registry("peer", PeerError)


class Peer(Plugin):
    """A peer's validated, frozen parameters; subclasses declare them, `unavailable` and `attached`."""

    registry: ClassVar[Registry[Peer]] = PEERS

    @classmethod
    @abc.abstractmethod
    def unavailable(cls) -> str | None:
        """Why this peer cannot run on this machine; None when it can."""

    @abc.abstractmethod
    def attached(self, pipe: Any, steps: int) -> Any:
        """A context manager that enables the peer on `pipe` for one call and disables it afterwards; it yields
        a callable returning (skipped calls per branch, statistics) once the call has run."""

    def edit(self, pipe: Any, image: PIL.Image.Image | str | Path, instruction: str, *, seed: int = 0,
             steps: int | None = None, guidance_scale: float | None = None, height: int | None = None,
             width: int | None = None, plain: bool = False) -> PeerResult:
        """One edit through the pipeline's `__call__` with the peer enabled; with `plain`, the same call without
        it (the paired reference a peer's speed and fidelity are measured against)."""
        reason = None if plain else self.unavailable()
        if reason:
            raise PeerError(f"peer {self.name!r} cannot run here: {reason}")
        call = pipeline_call(pipe, image, instruction, seed=seed, steps=steps, guidance_scale=guidance_scale,
                             height=height, width=width)
        with (_plain() if plain else self.attached(pipe, call["num_inference_steps"])) as stats:
            started = time.perf_counter()
            pixels = pipe(**call).images[0]
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            skipped, details = stats()
        return PeerResult(image=pipe.image_processor.numpy_to_pil(pixels[None])[0], pixels=pixels,
                          height=call["height"], width=call["width"], seconds=seconds,
                          steps=call["num_inference_steps"], skipped_calls=skipped, stats=details,
                          params=self.params())


@contextlib.contextmanager
def _plain() -> Iterator[Any]:
    yield lambda: ({}, {})


def pipeline_call(pipe: Any, image: PIL.Image.Image | str | Path, instruction: str, *, seed: int, steps: int | None,
                  guidance_scale: float | None, height: int | None, width: int | None) -> dict[str, Any]:
    """The keyword arguments of the pipeline's `__call__` that edit what our editor edits: the model's default
    steps and size where none are given, the source resized to the edit size with the family's filter."""
    adapter, defaults = adapter_for(pipe), defaults_of(pipe)
    if height is None and width is None and defaults.default_size is not None:
        height, width = defaults.default_size
    if height is None or width is None:
        raise PeerError("a peer edit needs height and width (or a model with a trained size)")
    steps = int(steps or defaults.steps or adapter.default_steps)
    gs = adapter.default_guidance if guidance_scale is None else float(guidance_scale)
    source = resize(open_image(image), int(height), int(width), adapter.resize_filter)
    call: dict[str, Any] = dict(image=source, prompt=instruction, height=int(height), width=int(width),
                                num_inference_steps=steps, generator=torch.Generator("cpu").manual_seed(int(seed)),
                                output_type="np")
    if adapter.family == "flux":
        call.update(guidance_scale=gs, max_area=int(height) * int(width), _auto_resize=False,
                    max_sequence_length=int(defaults.max_sequence_length))
    elif adapter.family == "flux2":
        call.update(max_sequence_length=int(defaults.max_sequence_length))
        if "guidance_scale" in inspect.signature(type(pipe).__call__).parameters:   # not the KV pipeline's
            call.update(guidance_scale=gs)
    else:
        from ..families.qwen_image_edit.adapter import NEGATIVE_PROMPT
        call.update(true_cfg_scale=gs, negative_prompt=NEGATIVE_PROMPT if gs > 1 else None)
    return call
