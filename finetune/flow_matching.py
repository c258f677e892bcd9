"""The flow-matching loss of a `FluxKontextPipeline` and what it needs: latents and text encoded exactly as at
inference, the image positions, the edit-weighted loss, and one in-process optimizer step (`transformer_step`,
for pilots and tests; a Ray Train worker's step is `finetune.worker`, through `finetune.flux`).

The loss is the conditional flow-matching loss of TokenDrop Sec. 2.1: z_t = (1 − σ)·z_tgt + σ·ε, target
velocity ε − z_tgt (the paper's Eq. 6 prints z_src − z_tgt, a typo under its own convention
x_t = (1 − t)·x_0 + t·x_1, v = x_1 − x_0). The source tokens z_src enter as Kontext's conditioning sequence
with `img_ids[..., 0] = 1`, exactly as `FluxKontextPipeline` builds it. Sparse Context's reference drop
(`finetune.reference_drop`) hides a random share of the source tokens per sample as attention keys.
Prompts are encoded at the model's own T5 length (its tokenizer's `model_max_length`: 512 for FLUX, 32 for
the toy), the sequence it sees at inference.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from diffusers import FluxKontextPipeline, FluxTransformer2DModel

from .reference_drop import key_mask

if TYPE_CHECKING:
    from .toy_source import Batch


# ------------------------------------------------------------------ encoding

@torch.no_grad()
def encode_latents(pipe: FluxKontextPipeline, pixels: torch.Tensor) -> torch.Tensor:
    """Packed, normalised latents B x L x 64, as `FluxKontextPipeline.prepare_latents` builds the source
    (posterior mode, then (z − shift)·scale, then 2x2 packing)."""
    vae = pipe.vae
    z = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode()
    z = (z - vae.config.shift_factor) * vae.config.scaling_factor
    b, c, h, w = z.shape
    return pipe._pack_latents(z, b, c, h, w)


@torch.no_grad()
def decode_latents(pipe: FluxKontextPipeline, packed: torch.Tensor, size: int) -> torch.Tensor:
    """Packed latents -> pixels in [-1, 1], as the pipeline decodes."""
    z = pipe._unpack_latents(packed, size, size, pipe.vae_scale_factor)
    z = z / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    return pipe.vae.decode(z.to(pipe.vae.dtype), return_dict=False)[0]


@torch.no_grad()
def encode_text(pipe: FluxKontextPipeline, prompts: Sequence[str], max_sequence_length: int | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(T5 sequence B x T x D, CLIP pooled B x D, text ids T x 3), exactly as at inference; T is
    `max_sequence_length`, by default the T5 tokenizer's `model_max_length` (the model's own context)."""
    length = int(max_sequence_length or pipe.tokenizer_2.model_max_length)
    embeds, pooled, text_ids = pipe.encode_prompt(prompt=list(prompts), prompt_2=None, device=pipe.vae.device,
                                                  num_images_per_prompt=1, max_sequence_length=length)
    return embeds, pooled, text_ids


def image_ids(pipe: FluxKontextPipeline, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy ids, source ids) for a square image: the source's frame index is 1, as in Kontext."""
    grid = size // pipe.vae_scale_factor // 2
    noisy = pipe._prepare_latent_image_ids(1, grid, grid, device, torch.float32)
    source = noisy.clone()
    source[..., 0] = 1
    return noisy, source


# ------------------------------------------------------------------ losses

def flow_matching_loss(transformer: FluxTransformer2DModel, z_src: torch.Tensor, z_tgt: torch.Tensor,
                       prompt_embeds: torch.Tensor, pooled: torch.Tensor, text_ids: torch.Tensor,
                       noisy_ids: torch.Tensor, source_ids: torch.Tensor, sigmas: torch.Tensor,
                       noise: torch.Tensor, keep: torch.Tensor | None = None,
                       guidance: torch.Tensor | None = None, edit_weight: float = 0.0) -> torch.Tensor:
    """‖v_θ(z_t, σ, z_src, c) − (ε − z_tgt)‖², mean over batch, tokens and channels.

    `keep` (bool, batch x source tokens) drops reference tokens per sample (Sparse Context's training): the
    dropped ones are hidden as attention keys in every layer, which for the noisy tokens - all the loss sees -
    equals gathering the kept ones, while samples keep different counts in one batch. `guidance` (one value
    per sample) is the distilled-guidance input of a transformer with `guidance_embeds` (FLUX.1-Kontext-dev).

    `edit_weight` w > 0 weighs the tokens an edit changes (`changed_tokens`) 1 + w times the others, as a
    weighted mean: in a local edit a few percent of the tokens carry all of the instruction's signal."""
    s = sigmas.to(z_tgt.dtype).view(-1, 1, 1)
    z_t = (1 - s) * z_tgt + s * noise
    attention = None
    if keep is not None:
        attention = {"attention_mask": key_mask(keep.to(z_t.device), prompt_embeds.shape[1], z_t.shape[1])}
    v = transformer(hidden_states=torch.cat([z_t, z_src], dim=1), timestep=sigmas.to(z_tgt.dtype),
                    guidance=guidance, pooled_projections=pooled, encoder_hidden_states=prompt_embeds,
                    txt_ids=text_ids, img_ids=torch.cat([noisy_ids, source_ids], dim=0),
                    joint_attention_kwargs=attention, return_dict=False)[0][:, : z_t.shape[1]]
    if not edit_weight:
        return F.mse_loss(v.float(), (noise - z_tgt).float())
    per_token = (v.float() - (noise - z_tgt).float()).pow(2).mean(dim=-1)
    weight = 1.0 + float(edit_weight) * changed_tokens(z_src, z_tgt).float()
    return (weight * per_token).sum() / weight.sum()


CHANGE_THRESHOLD = 0.5   # normalised latent units (std 1): at 0.5 the changed tokens follow the edit mask


def changed_tokens(z_src: torch.Tensor, z_tgt: torch.Tensor, threshold: float = CHANGE_THRESHOLD) -> torch.Tensor:
    """bool B x L: the packed tokens where target and source latents differ by more than `threshold` in any
    channel (the edit's region in token space, known from the training pair itself)."""
    return (z_tgt - z_src).abs().amax(dim=-1) > threshold


# ------------------------------------------------------------------ one step

def transformer_step(pipe: FluxKontextPipeline, optimizer: torch.optim.Optimizer, batch: Batch,
                     generator: torch.Generator, grad_clip: float = 1.0,
                     model: torch.nn.Module | None = None,
                     reference_drop: tuple[float, float] | None = None, edit_weight: float = 0.0,
                     sigma_logit_mean: float = 0.0) -> float:
    """One in-process optimizer step of the flow-matching loss; returns the loss. `model` is the transformer to
    call (default `pipe.transformer`). σ, ε and the kept reference tokens are drawn as a Ray Train worker draws
    them (`finetune.objective.draw`): `reference_drop` = (low, high), per sample a drop ratio ~ U[low, high];
    `sigma_logit_mean`, the logit-normal's location m."""
    from .objective import draw

    model = model or pipe.transformer
    model.train()
    device = batch.z_tgt.device
    b, n = batch.z_tgt.shape[:2]
    noisy_ids, source_ids = image_ids(pipe, int(math.isqrt(n)) * 2 * pipe.vae_scale_factor, device)
    samples = [{"z_src": batch.z_src[i], "z_tgt": batch.z_tgt[i]} for i in range(b)]
    d = draw(pipe.scheduler.config, samples, generator, reference_drop, sigma_logit_mean)
    keep = torch.stack(d.keep) if d.keep[0] is not None else None
    loss = flow_matching_loss(model, batch.z_src, batch.z_tgt, batch.prompt_embeds, batch.pooled,
                              batch.text_ids, noisy_ids, source_ids, d.sigmas.to(device),
                              torch.stack(d.noise).to(device, batch.z_tgt.dtype), keep=keep, edit_weight=edit_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # only what trains (all of it, or a LoRA adapter's matrices)
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def validation_loss(pipe: FluxKontextPipeline, batch: Batch, drop_ratio: float = 0.0) -> float:
    """The flow-matching loss of `batch` at the validation draws a worker uses (`finetune.objective.fixed_draws`:
    σ spread over 0.1 … 0.9, fixed noise, exactly round(ratio·n) dropped reference tokens per sample)."""
    from .objective import fixed_draws

    pipe.transformer.eval()
    device = batch.z_tgt.device
    b, n = batch.z_tgt.shape[:2]
    d = fixed_draws([{"z_src": batch.z_src[i], "z_tgt": batch.z_tgt[i]} for i in range(b)], drop_ratio)
    keep = torch.stack(d.keep) if d.keep[0] is not None else None
    noisy_ids, source_ids = image_ids(pipe, int(math.isqrt(n)) * 2 * pipe.vae_scale_factor, device)
    return float(flow_matching_loss(pipe.transformer, batch.z_src, batch.z_tgt, batch.prompt_embeds, batch.pooled,
                                    batch.text_ids, noisy_ids, source_ids, d.sigmas.to(device),
                                    torch.stack(d.noise).to(device, batch.z_tgt.dtype), keep=keep))
