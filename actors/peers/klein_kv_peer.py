"""FLUX.2 [klein] KV (Black Forest Labs' reference K/V reuse, "up to 2.5x" on multi-reference edits by its model
card) as a baseline, through diffusers' own `Flux2KleinKVPipeline.__call__`.

The pipeline is built around the edit's own components (no weights are copied). Built on a plain
FLUX.2 [klein] pipeline, it runs the KV computation on a checkpoint not trained for it (the result says so:
`params["kv_checkpoint"]`); on FLUX.2-klein-9b-kv (model `flux2-klein-kv`) it is the model's own computation.
Its constructor installs the KV attention processors on the shared transformer: the pipeline's processors are
put back afterwards, so the actor's model is left as it was.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import PIL.Image

from ..models import family_of
from .base import Peer, PeerError, PeerResult


@contextlib.contextmanager
def kv_pipeline(pipe: Any) -> Iterator[Any]:
    """`pipe` itself when it is a Flux2KleinKVPipeline, else one around its components, processors restored."""
    from diffusers import Flux2KleinKVPipeline

    if isinstance(pipe, Flux2KleinKVPipeline):
        yield pipe
        return
    if family_of(pipe).name != "flux2" or not hasattr(pipe, "text_encoder"):
        raise PeerError(f"peer 'flux2-klein-kv' runs FLUX.2 [klein] pipelines, got {type(pipe).__name__}")
    saved = dict(pipe.transformer.attn_processors)
    try:
        yield Flux2KleinKVPipeline(scheduler=pipe.scheduler, vae=pipe.vae, text_encoder=pipe.text_encoder,
                                   tokenizer=pipe.tokenizer, transformer=pipe.transformer)
    finally:
        pipe.transformer.set_attn_processor(saved)


class Flux2KleinKV(Peer, name="flux2-klein-kv"):
    """No parameters: the pipeline caches every reference's K/V on the first step and reuses them after."""

    @classmethod
    def unavailable(cls) -> str | None:
        return None   # diffusers >= 0.37 ships the pipeline; the project pins a release that has it

    @contextlib.contextmanager
    def attached(self, pipe: Any, steps: int) -> Iterator[Any]:
        yield lambda: ({}, {"reference_kv_steps": max(0, steps - 1)})

    def edit(self, pipe: Any, image: PIL.Image.Image | str | Path, instruction: str, *, plain: bool = False,
             **call: Any) -> PeerResult:
        from diffusers import Flux2KleinKVPipeline

        if plain:
            return super().edit(pipe, image, instruction, plain=True, **call)
        native = isinstance(pipe, Flux2KleinKVPipeline)
        with kv_pipeline(pipe) as kv:
            result = super().edit(kv, image, instruction, **call)
        result.params = {**result.params, "kv_checkpoint": native}
        if not native:
            result.notes.append("the KV computation on a checkpoint not trained for it (FLUX.2-klein-9b-kv is)")
        return result
