"""Qwen-Image-Edit (and Edit-Plus, several references) through diffusers, with source tokens dropped.

Sizes: diffusers encodes the source at ~1024² area whatever output size is asked. We encode the first
reference at the output size, so that source and target tokens correspond one to one; at the default
size (none given) the two agree. The text encoder sees exactly what diffusers shows it.
"""
from __future__ import annotations

import numpy as np
import PIL.Image
import torch
from diffusers import QwenImageEditPlusPipeline
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import CONDITION_IMAGE_SIZE, VAE_IMAGE_SIZE

from ...adapter import EditInputError, EditInputs, flow_schedule, resize, round_size
from .positions import RowSelection, gathered_positions
from .vae import unpack
from ..protocols import QWEN_IMAGE_EDIT_PROTOCOL as PROTOCOL

NEGATIVE_PROMPT = " "   # the model card's negative prompt for true classifier-free guidance


def _dims(area: int, image: PIL.Image.Image) -> tuple[int, int]:
    """(width, height) that diffusers picks for this image at this pixel area."""
    return tuple(calculate_dimensions(area, image.width / image.height)[:2])


class QwenImageEditAdapter:
    family = "qwen"
    # the papers' protocol for Qwen-Image-Edit, as data in `protocols` (the driver reads it without torch)
    default_steps = PROTOCOL.steps
    default_guidance = PROTOCOL.guidance
    resize_filter = PROTOCOL.resize_filter

    def __init__(self, pipe) -> None:
        self.pipe = pipe
        self.plus = isinstance(pipe, QwenImageEditPlusPipeline)

    def _size(self, images, height, width, notes) -> tuple[int, int]:
        multiple_of = self.pipe.vae_scale_factor * 2
        if height is None and width is None:
            w, h = _dims(VAE_IMAGE_SIZE, images[0])
            return h // multiple_of * multiple_of, w // multiple_of * multiple_of
        if height is None or width is None:
            raise EditInputError("give both height and width, or neither")
        return round_size(int(height), int(width), multiple_of, notes)

    def _pixels(self, image, h: int, w: int, resize_filter: str | None = None) -> torch.Tensor:
        proc = self.pipe.image_processor
        return proc.preprocess(resize(image, h, w, resize_filter or self.resize_filter), h, w).unsqueeze(2)

    def prepare(self, images, instruction, *, seed, steps, guidance_scale, height, width,
                max_sequence_length: int = 512, resize_filter: str | None = None) -> EditInputs:
        pipe, notes = self.pipe, []
        if not self.plus and len(images) != 1:
            raise EditInputError(
                f"Qwen-Image-Edit edits one image, got {len(images)}; use qwen-image-edit-plus for several")
        device = pipe._execution_device
        h, w = self._size(images, height, width, notes)
        if self.plus:
            prompt_image = [pipe.image_processor.resize(im, *_dims(CONDITION_IMAGE_SIZE, im)[::-1])
                            for im in images]
            sizes = [(h, w)] + [_dims(VAE_IMAGE_SIZE, im)[::-1] for im in images[1:]]
            pixels = [self._pixels(im, sh, sw, resize_filter) for im, (sh, sw) in zip(images, sizes)]
        else:
            cw, ch = _dims(VAE_IMAGE_SIZE, images[0])
            prompt_image = pipe.image_processor.resize(images[0], ch, cw)
            sizes = [(h, w)]
            pixels = self._pixels(images[0], h, w, resize_filter)
            if (h, w) != (ch // (pipe.vae_scale_factor * 2) * pipe.vae_scale_factor * 2,
                          cw // (pipe.vae_scale_factor * 2) * pipe.vae_scale_factor * 2):
                notes.append(f"source encoded at {w}x{h}; diffusers would encode it at {cw}x{ch}")

        embeds, mask = pipe.encode_prompt(image=prompt_image, prompt=instruction, device=device,
                                          num_images_per_prompt=1, max_sequence_length=max_sequence_length)
        gs = self.default_guidance if guidance_scale is None else float(guidance_scale)
        negative = None
        if gs > 1:
            negative = pipe.encode_prompt(image=prompt_image, prompt=NEGATIVE_PROMPT, device=device,
                                          num_images_per_prompt=1, max_sequence_length=max_sequence_length)
        generator = torch.Generator("cpu").manual_seed(seed)
        latents, source = pipe.prepare_latents(
            pixels, 1, pipe.transformer.config.in_channels // 4, h, w, embeds.dtype, device, generator)

        f = pipe.vae_scale_factor * 2
        grids = tuple((sh // f, sw // f) for sh, sw in sizes)
        scheduler, timesteps = flow_schedule(pipe, latents.shape[1], steps, device)
        guidance = None
        if pipe.transformer.config.guidance_embeds:
            guidance = torch.full([1], gs, device=device, dtype=torch.float32)
        return EditInputs(
            latents=latents, source=source, noisy_grid=grids[0], source_grids=grids, height=h, width=w,
            scheduler=scheduler, timesteps=timesteps, notes=notes,
            cond=dict(embeds=embeds, mask=mask, negative=negative, true_cfg=gs, guidance=guidance,
                      img_shapes=[[(1, *grids[0])] + [(1, *g) for g in grids]],
                      selection=RowSelection()))

    def attach(self, inputs: EditInputs):
        return gathered_positions(self.pipe.transformer, inputs.cond["selection"])

    def _call(self, inputs, hidden, timestep, embeds, mask, label) -> torch.Tensor:
        c = inputs.cond
        with self.pipe.transformer.cache_context(label):
            return self.pipe.transformer(
                hidden_states=hidden, timestep=timestep / 1000, guidance=c["guidance"],
                encoder_hidden_states_mask=mask, encoder_hidden_states=embeds,
                img_shapes=c["img_shapes"], attention_kwargs={}, return_dict=False)[0]

    def velocity(self, inputs: EditInputs, z: torch.Tensor, t: torch.Tensor,
                 keep: torch.Tensor | None) -> torch.Tensor:
        c, n = inputs.cond, z.shape[1]
        source = inputs.source
        selection: RowSelection = c["selection"]
        if keep is None:
            selection.rows = None
        else:
            source = source[:, keep]
            selection.rows = torch.cat([torch.arange(n, device=keep.device), n + keep])
        hidden = torch.cat([z, source], dim=1)
        timestep = t.expand(z.shape[0]).to(z.dtype)
        pred = self._call(inputs, hidden, timestep, c["embeds"], c["mask"], "cond")[:, :n]
        if c["negative"] is not None:
            neg_embeds, neg_mask = c["negative"]
            neg = self._call(inputs, hidden, timestep, neg_embeds, neg_mask, "uncond")[:, :n]
            combined = neg + c["true_cfg"] * (pred - neg)
            # diffusers rescales the guided prediction to the conditional one's norm, per token
            pred = combined * (torch.norm(pred, dim=-1, keepdim=True) / torch.norm(combined, dim=-1, keepdim=True))
        return pred

    def decode(self, inputs: EditInputs, z: torch.Tensor) -> np.ndarray:
        """Float RGB in [0, 1], [H, W, 3], exactly as diffusers post-processes it."""
        pipe, vae = self.pipe, self.pipe.vae
        latents = unpack(pipe, z, inputs.height, inputs.width).to(vae.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(latents)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(latents)
        image = vae.decode(latents / inv_std + mean, return_dict=False)[0][:, :, 0]
        return pipe.image_processor.postprocess(image, output_type="np")[0]
