"""The flow-matching training step of a `FluxKontextPipeline`: encoding, the loss and one optimizer step.

No Ray in here and nothing model-size specific: the toy model (`toy.model`) trains with it under Ray Train
(`toy.train_loop`), and a fine-tune of a real FLUX.1-Kontext checkpoint would call the same functions. Every
piece is unit-testable.

The loss is the conditional flow-matching loss of TokenDrop Sec. 2.1: z_t = (1 − σ)·z_tgt + σ·ε, target
velocity ε − z_tgt (the paper's Eq. 6 prints z_src − z_tgt, a typo under its own convention
x_t = (1 − t)·x_0 + t·x_1, v = x_1 − x_0). The source tokens z_src enter as Kontext's conditioning sequence
with `img_ids[..., 0] = 1`, exactly as `FluxKontextPipeline` builds it. Sparse Context's reference drop
(`actors.reference_drop`) hides a random share of the source tokens per sample as attention keys.
Prompts are encoded at the model's own T5 length (its tokenizer's `model_max_length`: 512 for FLUX, 32 for
the toy), the sequence it sees at inference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import FluxKontextPipeline, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux_kontext import calculate_shift

from .reference_drop import key_mask, sample_reference_keep
from .tiny_models import FLUX_KONTEXT_SCHEDULER_CONFIG


# ------------------------------------------------------------------ encoding

def to_pixels(images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 B x H x W x 3 -> float B x 3 x H x W in [-1, 1], as `VaeImageProcessor.preprocess` gives."""
    arr = np.stack(list(images)) if not isinstance(images, np.ndarray) else images
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """float B x 3 x H x W in [-1, 1] -> uint8 B x H x W x 3, as diffusers' "pil" post-processing rounds."""
    x = (pixels.detach().float().cpu() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return (x * 255).round().astype(np.uint8)


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

def sample_sigmas(batch: int, num_tokens: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """σ ~ logit-normal(0, 1) pushed through the scheduler's dynamic shift for this token count, so training
    visits the noise levels the sampler will use (SD3's recipe; FLUX shifts by sequence length)."""
    cfg = FLUX_KONTEXT_SCHEDULER_CONFIG
    mu = calculate_shift(num_tokens, cfg["base_image_seq_len"], cfg["max_image_seq_len"],
                         cfg["base_shift"], cfg["max_shift"])
    u = torch.sigmoid(torch.randn(batch, generator=generator))
    return math.exp(mu) / (math.exp(mu) + (1 / u - 1))


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

@dataclass
class Batch:
    """One transformer training batch, already encoded (the encoders are frozen in this phase)."""
    z_src: torch.Tensor
    z_tgt: torch.Tensor
    prompt_embeds: torch.Tensor
    pooled: torch.Tensor
    text_ids: torch.Tensor


def encode_batch(pipe: FluxKontextPipeline, sources: np.ndarray, targets: np.ndarray,
                 instructions: Sequence[str], max_sequence_length: int | None = None) -> Batch:
    both = encode_latents(pipe, to_pixels(np.concatenate([sources, targets])))
    n = len(sources)
    embeds, pooled, text_ids = encode_text(pipe, instructions, max_sequence_length)
    return Batch(z_src=both[:n], z_tgt=both[n:], prompt_embeds=embeds, pooled=pooled, text_ids=text_ids)


def transformer_step(pipe: FluxKontextPipeline, optimizer: torch.optim.Optimizer, batch: Batch,
                     generator: torch.Generator, grad_clip: float = 1.0,
                     model: torch.nn.Module | None = None,
                     reference_drop: tuple[float, float] | None = None, edit_weight: float = 0.0) -> float:
    """One optimizer step of the flow-matching loss; returns the loss. `model` is the (possibly
    DDP-wrapped) transformer to call; it defaults to `pipe.transformer`. `reference_drop` = (low, high):
    per sample a drop ratio ~ U[low, high] of the reference tokens, dropped at random."""
    model = model or pipe.transformer
    model.train()
    device = batch.z_tgt.device
    b, n = batch.z_tgt.shape[:2]
    noisy_ids, source_ids = image_ids(pipe, int(math.isqrt(n)) * 2 * pipe.vae_scale_factor, device)
    sigmas = sample_sigmas(b, n, generator).to(device)
    noise = torch.randn(batch.z_tgt.shape, generator=generator).to(device, batch.z_tgt.dtype)
    # drawn after σ and ε, so a run with the drop sees the same σ and ε as one without it
    keep = None
    if reference_drop is not None:
        keep = sample_reference_keep(b, batch.z_src.shape[1], *reference_drop, generator=generator)
    loss = flow_matching_loss(model, batch.z_src, batch.z_tgt, batch.prompt_embeds, batch.pooled,
                              batch.text_ids, noisy_ids, source_ids, sigmas, noise, keep=keep,
                              edit_weight=edit_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # only what trains (all of it, or a LoRA adapter's matrices)
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def validation_loss(pipe: FluxKontextPipeline, batch: Batch, drop_ratio: float = 0.0, seed: int = 12345) -> float:
    """Flow-matching loss of `batch` at fixed σ (0.1 … 0.9 across the batch), fixed noise and, for
    `drop_ratio` > 0, a fixed random set of exactly round(ratio·n) dropped reference tokens per sample:
    comparable across steps, runs and models."""
    pipe.transformer.eval()
    device = batch.z_tgt.device
    n, tokens = batch.z_tgt.shape[:2]
    gen = torch.Generator().manual_seed(seed)
    sigmas = torch.linspace(0.1, 0.9, n)
    noise = torch.randn(batch.z_tgt.shape, generator=gen).to(device, batch.z_tgt.dtype)
    keep = None
    if drop_ratio > 0:
        keep = sample_reference_keep(n, batch.z_src.shape[1], drop_ratio, drop_ratio,
                                     generator=torch.Generator().manual_seed(seed + 1))
    noisy_ids, source_ids = image_ids(pipe, int(math.isqrt(tokens)) * 2 * pipe.vae_scale_factor, device)
    return float(flow_matching_loss(pipe.transformer, batch.z_src, batch.z_tgt, batch.prompt_embeds, batch.pooled,
                                    batch.text_ids, noisy_ids, source_ids, sigmas.to(device), noise, keep=keep))
