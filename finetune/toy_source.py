"""The procedural toy data (`toy.data`) as a data source of the training driver: every worker makes its own
records for every step (record indices are a function of phase, step and rank, so no dataset is read or
split), and every step's draws come from a generator seeded by the same numbers, so a resumed run continues
exactly where its last checkpoint left it. These are the streams the toy models were trained on: a run of a
toy config today draws the records and noise its first run drew.

Transformer phase: the step's records encoded by the frozen VAE and text encoders into the samples a family
objective takes (`finetune.flux`). VAE phase: the step's images as random crops (`crops`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

PHASES = ("vae", "transformer")


def batch_arrays(seed: int, start: int, n: int, size: int, categories: Sequence[str] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Records start..start+n of `seed`; with `categories`, record i is of categories[i % len] (a data mix)."""
    from toy.data import make_record

    recs = [make_record(seed, i, size, categories[i % len(categories)] if categories else None)
            for i in range(start, start + n)]
    return (np.stack([r.source for r in recs]), np.stack([r.target for r in recs]),
            [r.instruction for r in recs])


@dataclass
class Batch:
    """One transformer training batch, already encoded (the encoders are frozen in this phase)."""
    z_src: torch.Tensor
    z_tgt: torch.Tensor
    prompt_embeds: torch.Tensor
    pooled: torch.Tensor
    text_ids: torch.Tensor


def encode_batch(pipe: Any, sources: np.ndarray, targets: np.ndarray, instructions: Sequence[str],
                 max_sequence_length: int | None = None) -> Batch:
    """Sources, targets and instructions encoded as `FluxKontextPipeline` encodes them, in one batch."""
    from toy.vae import to_pixels

    from .flow_matching import encode_latents, encode_text

    both = encode_latents(pipe, to_pixels(np.concatenate([sources, targets])))
    n = len(sources)
    embeds, pooled, text_ids = encode_text(pipe, instructions, max_sequence_length)
    return Batch(z_src=both[:n], z_tgt=both[n:], prompt_embeds=embeds, pooled=pooled, text_ids=text_ids)


def as_samples(pipe: Any, batch: Batch) -> list[dict[str, torch.Tensor]]:
    """A batch as the per-sample dicts `finetune.flux.FluxObjective.losses` stacks back (no guidance input)."""
    from .flow_matching import image_ids

    tokens = batch.z_tgt.shape[1]
    noisy, source = image_ids(pipe, int(math.isqrt(tokens)) * 2 * pipe.vae_scale_factor, batch.z_tgt.device)
    return [{"z_src": batch.z_src[i], "z_tgt": batch.z_tgt[i], "prompt_embeds": batch.prompt_embeds[i],
             "pooled": batch.pooled[i], "text_ids": batch.text_ids, "latent_ids": noisy, "source_ids": source}
            for i in range(len(batch.z_src))]


@dataclass(frozen=True)
class ToySource:
    """One worker's view of the toy data: `seed`'s records, `batch_size` per step split over `world` workers."""
    seed: int
    size: int
    rank: int
    world: int
    categories: tuple[str, ...] | None = None

    def records(self, phase: str, step: int, batch_size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """This worker's records of `step`: disjoint per (phase, step, rank); the phase offset keeps VAE and
        transformer data apart."""
        per_worker = max(1, batch_size // self.world)
        start = ((PHASES.index(phase) * 10_000_000) + step * self.world + self.rank) * per_worker
        return batch_arrays(self.seed, start, per_worker, self.size, self.categories)

    def generator(self, phase: str, step: int) -> torch.Generator:
        """The generator of this worker's draws at `step` (crops; σ, ε and kept reference tokens)."""
        seed = np.random.SeedSequence([self.seed, PHASES.index(phase), step, self.rank]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(seed))

    def samples(self, pipe: Any, step: int, batch_size: int, text_length: int,
                device: torch.device) -> list[dict[str, torch.Tensor]]:
        """The transformer phase's encoded samples of `step` on `device`."""
        src, tgt, text = self.records("transformer", step, batch_size)
        return to_device(as_samples(pipe, encode_batch(pipe, src, tgt, text, text_length)), device)

    def vae_images(self, step: int, batch_size: int, crop: int, generator: torch.Generator) -> np.ndarray:
        """The VAE phase's images of `step`: sources and targets alike, as random crops (the VAE is
        convolutional, and a crop costs a quarter of a full image per pixel of gradient signal)."""
        src, tgt, _ = self.records("vae", step, batch_size)
        return crops(np.concatenate([src[0::2], tgt[1::2]]), crop, generator)


def crops(images: np.ndarray, crop: int, generator: torch.Generator) -> np.ndarray:
    """One random crop per image, aligned to the VAE's 8 px grid so that latents stay in phase."""
    if crop >= images.shape[1]:
        return images
    cells = (images.shape[1] - crop) // 8 + 1
    pos = torch.randint(0, cells, (len(images), 2), generator=generator) * 8
    return np.stack([im[y:y + crop, x:x + crop] for im, (y, x) in zip(images, pos.tolist())])


def to_device(samples: list[dict[str, torch.Tensor]], device: torch.device) -> list[dict[str, torch.Tensor]]:
    return [{k: v.to(device) for k, v in s.items()} for s in samples]
