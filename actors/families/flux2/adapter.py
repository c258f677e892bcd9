"""FLUX.2 [klein] (and any Flux2KleinPipeline) through diffusers, with reference tokens dropped by gathering.

Every reference image is its own block of tokens after the noisy ones, with RoPE time offset 10·(i+1). The
first reference is encoded at the output size so that its tokens correspond one to one with the noisy
tokens (at the default size, none given, that is the pipeline's own size for it); the others at the size the
pipeline gives them. With CFG (a non-distilled checkpoint at guidance > 1) each step makes the pipeline's two
calls, the negative prompt being "".
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu, retrieve_timesteps

from ...adapter import EditInputError, EditInputs, no_hooks, round_size
from . import references
from .vae import unpack
from ..protocols import FLUX2_KLEIN_PROTOCOL as PROTOCOL


def klein_schedule(pipe: Any, image_seq_len: int, steps: int, device: Any) -> tuple[Any, torch.Tensor]:
    """A scheduler no other edit touches, set up as Flux2KleinPipeline.__call__ does (empirical mu)."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    sigmas = None if scheduler.config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
    mu = compute_empirical_mu(image_seq_len=image_seq_len, num_steps=steps)
    timesteps, _ = retrieve_timesteps(scheduler, steps, device, sigmas=sigmas, mu=mu)
    scheduler.set_begin_index(0)
    return scheduler, timesteps


class Flux2Adapter:
    family = "flux2"
    # FLUX.2 [klein]'s model card, as data in `protocols` (the driver reads it without torch)
    default_steps = PROTOCOL.steps
    default_guidance = PROTOCOL.guidance
    resize_filter = PROTOCOL.resize_filter

    def __init__(self, pipe) -> None:
        self.pipe = pipe

    def _size(self, natural: tuple[int, int], height: int | None, width: int | None,
              notes: list[str]) -> tuple[int, int]:
        if height is None and width is None:
            return natural
        if height is None or width is None:
            raise EditInputError("give both height and width, or neither")
        return round_size(int(height), int(width), self.pipe.vae_scale_factor * 2, notes)

    def _pixels(self, images, size, resize_filter, notes) -> list[torch.Tensor]:
        pipe, first = self.pipe, images[0]
        natural = references.natural_size(pipe, first)
        if natural == size:
            head = references.pixels(pipe, first)
        else:
            head = references.pixels_at(pipe, first, size, resize_filter or self.resize_filter)
            notes.append(f"reference 1 encoded at {size[1]}x{size[0]}; diffusers would encode it at "
                         f"{natural[1]}x{natural[0]}")
        return [head] + [references.pixels(pipe, im) for im in images[1:]]

    def _encode(self, instruction: str, max_sequence_length: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, text_ids = self.pipe.encode_prompt(prompt=instruction, device=device, num_images_per_prompt=1,
                                                   max_sequence_length=max_sequence_length)
        return embeds, text_ids[0]

    def prepare(self, images, instruction, *, seed, steps, guidance_scale, height, width,
                max_sequence_length: int = 512, resize_filter: str | None = None) -> EditInputs:
        if not images:
            raise EditInputError("FLUX.2 edits need at least one reference image")
        pipe, notes = self.pipe, []
        references.check(pipe, images)
        device = pipe._execution_device
        h, w = self._size(references.natural_size(pipe, images[0]), height, width, notes)
        pixels = self._pixels(images, (h, w), resize_filter, notes)
        embeds, text_ids = self._encode(instruction, max_sequence_length, device)
        gs = self.default_guidance if guidance_scale is None else float(guidance_scale)
        negative = self._negative(gs, max_sequence_length, device)
        generator = torch.Generator("cpu").manual_seed(seed)   # noise first, then the references: as diffusers
        latents, latent_ids = pipe.prepare_latents(1, pipe.transformer.config.in_channels // 4, h, w,
                                                   embeds.dtype, device, generator)
        source, source_ids = pipe.prepare_image_latents(pixels, 1, generator, device, pipe.vae.dtype)
        scheduler, timesteps = self._schedule(latents.shape[1], steps, device)
        f = pipe.vae_scale_factor * 2
        grids = tuple((p.shape[-2] // f, p.shape[-1] // f) for p in pixels)
        return EditInputs(
            latents=latents, source=source, noisy_grid=grids[0], source_grids=grids, height=h, width=w,
            scheduler=scheduler, timesteps=timesteps, notes=notes,
            cond=dict(embeds=embeds, text_ids=text_ids, negative=negative, guidance_scale=gs,
                      guidance=self._guidance(gs, device), latent_ids=latent_ids[0], source_ids=source_ids[0]))

    def _negative(self, gs: float, max_sequence_length: int, device: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The negative prompt's embeddings when the pipeline runs CFG (not distilled, guidance > 1), else None."""
        cfg = gs > 1 and not self.pipe.config.is_distilled
        return self._encode("", max_sequence_length, device) if cfg else None

    def _guidance(self, gs: float, device: Any) -> torch.Tensor | None:
        """The transformer's `guidance` input: none for klein (no guidance embedding)."""
        return None

    def _schedule(self, image_seq_len: int, steps: int, device: Any) -> tuple[Any, torch.Tensor]:
        return klein_schedule(self.pipe, image_seq_len, steps, device)

    def attach(self, inputs: EditInputs):
        return no_hooks()

    def _call(self, hidden: torch.Tensor, timestep: torch.Tensor, text: tuple[torch.Tensor, torch.Tensor],
              img_ids: torch.Tensor, label: str, guidance: torch.Tensor | None = None) -> torch.Tensor:
        transformer = self.pipe.transformer
        if guidance is not None:
            guidance = guidance.expand(hidden.shape[0])
        with transformer.cache_context(label):
            return transformer(hidden_states=hidden.to(transformer.dtype), timestep=timestep / 1000, guidance=guidance,
                               encoder_hidden_states=text[0], txt_ids=text[1], img_ids=img_ids,
                               joint_attention_kwargs=None, return_dict=False)[0]

    def velocity(self, inputs: EditInputs, z: torch.Tensor, t: torch.Tensor,
                 keep: torch.Tensor | None) -> torch.Tensor:
        c = inputs.cond
        source, source_ids = inputs.source, c["source_ids"]
        if keep is not None:
            source, source_ids = source[:, keep], source_ids[keep]
        hidden = torch.cat([z, source], dim=1)
        img_ids = torch.cat([c["latent_ids"], source_ids], dim=0)
        timestep = t.expand(z.shape[0]).to(z.dtype)
        v = self._call(hidden, timestep, (c["embeds"], c["text_ids"]), img_ids, "cond", c["guidance"])[:, : z.shape[1]]
        if c["negative"] is not None:
            neg = self._call(hidden, timestep, c["negative"], img_ids, "uncond")[:, : z.shape[1]]
            v = neg + c["guidance_scale"] * (v - neg)
        return v

    def decode(self, inputs: EditInputs, z: torch.Tensor) -> np.ndarray:
        """Float RGB in [0, 1], [H, W, 3], exactly as diffusers post-processes it."""
        pipe = self.pipe
        latents = unpack(pipe, z, inputs.height, inputs.width)
        image = pipe.vae.decode(latents, return_dict=False)[0]
        return pipe.image_processor.postprocess(image, output_type="np")[0]
