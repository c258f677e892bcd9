"""FLUX.1-Kontext through diffusers' FluxKontextPipeline, with source tokens dropped by gathering.

Flux builds RoPE per token from `img_ids`, so dropping source tokens is one index applied to the
packed source latents and to their id rows; the transformer itself is untouched.
"""
from __future__ import annotations

import contextlib

import numpy as np
import PIL.Image
import torch
from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

from ...reference_residual import full_reference
from ...adapter import EditInputError, EditInputs, flow_schedule, no_hooks, resize, round_size
from .vae import unpack
from ..protocols import FLUX_KONTEXT_PROTOCOL as PROTOCOL


class FluxKontextAdapter:
    family = "flux"
    # the papers' protocol for FLUX.1-Kontext-dev, as data in `protocols` (the driver reads it without torch)
    default_steps = PROTOCOL.steps
    default_guidance = PROTOCOL.guidance
    resize_filter = PROTOCOL.resize_filter

    def __init__(self, pipe) -> None:
        self.pipe = pipe

    def _size(self, image: PIL.Image.Image, height: int | None, width: int | None,
              notes: list[str]) -> tuple[int, int]:
        multiple_of = self.pipe.vae_scale_factor * 2
        if height is None and width is None:
            # diffusers' default resizes the source to the preferred Kontext resolution of its aspect;
            # we edit at that size so that source and target tokens correspond one to one.
            aspect = image.width / image.height
            _, w, h = min((abs(aspect - w / h), w, h) for w, h in PREFERRED_KONTEXT_RESOLUTIONS)
            return h // multiple_of * multiple_of, w // multiple_of * multiple_of
        if height is None or width is None:
            raise EditInputError("give both height and width, or neither")
        return round_size(int(height), int(width), multiple_of, notes)

    def prepare(self, images, instruction, *, seed, steps, guidance_scale, height, width,
                max_sequence_length: int = 512, resize_filter: str | None = None) -> EditInputs:
        if len(images) != 1:
            raise EditInputError(f"FLUX.1-Kontext edits one image, got {len(images)} references")
        pipe, notes = self.pipe, []
        device = pipe._execution_device
        h, w = self._size(images[0], height, width, notes)
        pixels = pipe.image_processor.preprocess(resize(images[0], h, w, resize_filter or self.resize_filter), h, w)
        prompt_embeds, pooled, text_ids = pipe.encode_prompt(
            prompt=instruction, prompt_2=None, device=device, num_images_per_prompt=1,
            max_sequence_length=max_sequence_length)
        generator = torch.Generator("cpu").manual_seed(seed)
        latents, source, latent_ids, source_ids = pipe.prepare_latents(
            pixels, 1, pipe.transformer.config.in_channels // 4, h, w, prompt_embeds.dtype, device,
            generator)
        scheduler, timesteps = flow_schedule(pipe, latents.shape[1], steps, device)
        guidance = None
        if pipe.transformer.config.guidance_embeds:
            gs = self.default_guidance if guidance_scale is None else float(guidance_scale)
            guidance = torch.full([1], gs, device=device, dtype=torch.float32)
        grid = (h // pipe.vae_scale_factor // 2, w // pipe.vae_scale_factor // 2)
        return EditInputs(
            latents=latents, source=source, noisy_grid=grid, source_grids=(grid,), height=h, width=w,
            scheduler=scheduler, timesteps=timesteps, notes=notes,
            cond=dict(prompt_embeds=prompt_embeds, pooled=pooled, text_ids=text_ids,
                      latent_ids=latent_ids, source_ids=source_ids, guidance=guidance))

    def attach(self, inputs: EditInputs):
        return no_hooks()

    def velocity(self, inputs: EditInputs, z: torch.Tensor, t: torch.Tensor,
                 keep: torch.Tensor | None) -> torch.Tensor:
        c = inputs.cond
        source, source_ids = inputs.source, c["source_ids"]
        if keep is not None:
            source, source_ids = source[:, keep], source_ids[keep]
        timestep = t.expand(z.shape[0]).to(z.dtype)
        # the one (conditional) call of a step, in a cache_context as diffusers' cache hooks need (and as
        # FluxKontextPipeline does not open: diffusers issue #12760), so that a diffusers cache enabled on the
        # transformer (`enable_cache`) works in this loop too
        # a model with the copy prior needs the whole reference even when the call carries only some of it
        whole = full_reference(self.pipe.transformer, inputs.source, c["source_ids"]) if keep is not None \
            else contextlib.nullcontext()
        with whole, self.pipe.transformer.cache_context("cond"):
            out = self.pipe.transformer(
                hidden_states=torch.cat([z, source], dim=1),
                timestep=timestep / 1000,
                guidance=c["guidance"],
                pooled_projections=c["pooled"],
                encoder_hidden_states=c["prompt_embeds"],
                txt_ids=c["text_ids"],
                img_ids=torch.cat([c["latent_ids"], source_ids], dim=0),
                joint_attention_kwargs={},
                return_dict=False,
            )[0]
        return out[:, : z.shape[1]]

    def decode(self, inputs: EditInputs, z: torch.Tensor) -> np.ndarray:
        """Float RGB in [0, 1], [H, W, 3], exactly as diffusers post-processes it."""
        pipe = self.pipe
        latents = unpack(pipe, z, inputs.height, inputs.width)
        latents = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
        image = pipe.vae.decode(latents.to(pipe.vae.dtype), return_dict=False)[0]
        return pipe.image_processor.postprocess(image, output_type="np")[0]
