"""FLUX.2 [klein] KV: the reference images' attention K/V computed once and reused on every later call.

Black Forest Labs' FLUX.2-klein-9b-kv checkpoint is trained for this computation and diffusers runs it as
`Flux2KleinKVPipeline`: the first call puts the reference tokens *before* the noisy ones, modulates them at a
fixed timestep (0), lets them attend only to themselves (text and noisy tokens attend to everything), and
returns every layer's post-RoPE reference K/V (`kv_cache_mode="extract"`); every later call computes the text
and noisy tokens only and attends to the cached reference K/V (`kv_cache_mode="cached"`). Because the
reference tokens never attend to text or noisy tokens, their K/V do not depend on the step, the prompt or the
noise: reusing them is exact for this model, not an approximation.

Composed with reference-token dropping: the first call of a branch caches the K/V of the source rows its plan
keeps; a later call whose kept rows are among them attends to those rows of the cache only (the cached
context with keys dropped, as SpotEdit drops cached source keys), and a call that keeps a row the cache lacks
extracts again with its own rows (counted in `extracts`). Reading a subset is what composing means here, not a
recomputation: in the extracting call references attend to the references kept *then*, so a row's K/V depend
on that set, and the kept set of the extracting call is recorded. On cached calls no reference token is
computed at all, so dropping saves only attention over their keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.models.transformers.transformer_flux2 import Flux2KVCache

from ...adapter import EditInputs
from .adapter import Flux2Adapter


@dataclass
class _Branch:
    cache: Any                 # diffusers' Flux2KVCache of this CFG branch
    kept: torch.Tensor         # the source rows (ascending) whose K/V it holds


@dataclass
class ReferenceKV:
    """One edit's reference K/V, per CFG branch, and what its calls did (the trace and the result read it)."""

    num_source: int
    branches: dict[str, _Branch] = field(default_factory=dict)
    extracts: int = 0          # calls that computed the reference tokens (the first of each branch, and refills)
    cached_calls: int = 0      # calls that read the reference K/V from the cache
    last_cached: bool = False  # the step's last call read the cache

    def rows(self, keep: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        return torch.arange(self.num_source, device=device) if keep is None else keep

    def view(self, label: str, rows: torch.Tensor) -> Flux2KVCache | None:
        """The branch's cache restricted to `rows` (all of it when they are the rows it holds); None when it
        lacks one of them (or the branch has none yet)."""
        branch = self.branches.get(label)
        if branch is None:
            return None
        if torch.equal(branch.kept, rows):
            return branch.cache
        pos = torch.searchsorted(branch.kept, rows).clamp_max(branch.kept.numel() - 1)
        if not torch.equal(branch.kept[pos], rows):
            return None
        return _restricted(branch.cache, pos)

    def clear(self) -> None:
        for branch in self.branches.values():
            branch.cache.clear()
        self.branches.clear()


def _restricted(cache: Flux2KVCache, pos: torch.Tensor) -> Flux2KVCache:
    """The same cache with only the reference rows `pos` (diffusers' layout: [batch, rows, heads, head_dim])."""
    out = Flux2KVCache(len(cache.double_block_caches), len(cache.single_block_caches))
    for mine, theirs in zip(out.double_block_caches + out.single_block_caches,
                            cache.double_block_caches + cache.single_block_caches):
        k, v = theirs.get()
        mine.store(k[:, pos], v[:, pos])
    out.num_ref_tokens = int(pos.numel())
    return out


def _cached_call(transformer: Any, hidden: torch.Tensor, timestep: torch.Tensor, text: tuple, img_ids: torch.Tensor,
                 cache: Flux2KVCache) -> torch.Tensor:
    return transformer(hidden_states=hidden, timestep=timestep / 1000, guidance=None, encoder_hidden_states=text[0],
                       txt_ids=text[1], img_ids=img_ids, joint_attention_kwargs=None, return_dict=False,
                       kv_cache=cache, kv_cache_mode="cached")[0]


def _extract_call(transformer: Any, hidden: torch.Tensor, timestep: torch.Tensor, text: tuple, img_ids: torch.Tensor,
                  num_ref: int) -> tuple[torch.Tensor, Flux2KVCache | None]:
    """The call's output and the K/V cache it filled; None when a temporal cache served the call instead (its
    hook returns the output alone): nothing was computed, so nothing is cached."""
    returned = transformer(hidden_states=hidden, timestep=timestep / 1000, guidance=None,
                           encoder_hidden_states=text[0], txt_ids=text[1], img_ids=img_ids,
                           joint_attention_kwargs=None, return_dict=False, kv_cache_mode="extract",
                           num_ref_tokens=num_ref)
    return returned[0], (returned[1] if len(returned) > 1 else None)


class Flux2KVAdapter(Flux2Adapter):
    """`Flux2KleinKVPipeline`'s computation through our loop: the same inputs as klein (the KV pipeline
    prepares latents, references, text and schedule as `Flux2KleinPipeline` does), no CFG (the KV pipeline has
    none), and every transformer call through the edit's `ReferenceKV`."""

    def prepare(self, images, instruction, **kwargs) -> EditInputs:
        inputs = super().prepare(images, instruction, **kwargs)
        if inputs.cond["negative"] is not None:
            inputs.cond["negative"] = None
            inputs.notes.append("guidance ignored: Flux2KleinKVPipeline runs no classifier-free guidance")
        inputs.cond["reference_kv"] = ReferenceKV(num_source=int(inputs.source.shape[1]))
        return inputs

    def velocity(self, inputs: EditInputs, z: torch.Tensor, t: torch.Tensor,
                 keep: torch.Tensor | None) -> torch.Tensor:
        c, transformer = inputs.cond, self.pipe.transformer
        state: ReferenceKV = c["reference_kv"]
        rows = state.rows(keep, z.device)
        timestep = t.expand(z.shape[0]).to(z.dtype)
        text = (c["embeds"], c["text_ids"])
        with transformer.cache_context("cond"):
            cache = state.view("cond", rows)
            if cache is not None:
                state.cached_calls, state.last_cached = state.cached_calls + 1, True
                return _cached_call(transformer, z.to(transformer.dtype), timestep, text, c["latent_ids"], cache)
            source, source_ids = inputs.source[:, rows], c["source_ids"][rows]
            hidden = torch.cat([source, z], dim=1).to(transformer.dtype)   # [references, noisy], as diffusers
            img_ids = torch.cat([source_ids, c["latent_ids"]], dim=0)
            out, cache = _extract_call(transformer, hidden, timestep, text, img_ids, int(rows.numel()))
        state.last_cached = False
        if cache is None:
            return out
        if "cond" in state.branches:
            state.branches["cond"].cache.clear()
        state.branches["cond"] = _Branch(cache=cache, kept=rows)
        state.extracts += 1
        return out
