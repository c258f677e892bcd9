"""Training the toy editing model: the pipeline it is built from, encoding, the losses and one step.

No Ray in here (`jobs/train.py` wraps it in a Ray Train `TorchTrainer`), so every piece is unit-testable.

The model is a `FluxKontextPipeline` of the real classes (`FluxTransformer2DModel`, `AutoencoderKL`,
`CLIPTextModel`, `T5EncoderModel`) at toy sizes. Training has two phases:
1. the VAE alone, on reconstruction (L1 + MSE + a tiny KL), then its latent statistics become the
   config's `shift_factor` / `scaling_factor` as for the real FLUX VAE;
2. the transformer alone, on the conditional flow-matching loss of TokenDrop Sec. 2.1:
   z_t = (1 − σ)·z_tgt + σ·ε, target velocity ε − z_tgt (the paper's Eq. 6 prints z_src − z_tgt, a typo
   under its own convention x_t = (1 − t)·x_0 + t·x_1, v = x_1 − x_0). The source tokens z_src enter as
   Kontext's conditioning sequence with `img_ids[..., 0] = 1`, exactly as `FluxKontextPipeline` builds it.

The text encoders stay frozen at their seeded random weights: a 1-layer T5 keeps token identity through its
residual path, and the trainable `context_embedder` and attention learn to read it (as FLUX freezes its own
encoders). The T5 context is 32 tokens, not FLUX's 512: the saved model says so (`dropedit.json`,
`max_sequence_length`) and our editor pads prompts to that length by default, so the transformer is trained
on the very sequence it sees at inference (the longest toy instruction is 11 tokens). 512 padded tokens would make 80% of every sequence padding and
the training 4-5x slower; diffusers' own `__call__` needs `max_sequence_length=32` for this model. The toy
transformer has no guidance embedding: it is not guidance-distilled, so `guidance_scale` has no effect on it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux_kontext import calculate_shift
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from .reference_drop import key_mask, sample_reference_keep
from .tiny_models import FLUX_KONTEXT_SCHEDULER_CONFIG, TEXT_DIM, _seeded
from .tiny_tokenizers import build_clip_tokenizer, build_t5_tokenizer

T5_LENGTH = 32   # the toy's T5 context; saved with the model as its `max_sequence_length` (dropedit.json)


@dataclass(frozen=True)
class ToyModelConfig:
    """Sizes of the toy model. Defaults: 2.3 M-parameter transformer (128 wide), 128 px images -> 8x8 = 64 tokens."""
    image_size: int = 128
    num_layers: int = 2              # dual-stream blocks
    num_single_layers: int = 4
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    axes_dims_rope: tuple[int, int, int] = (8, 12, 12)    # frame, row, column; sums to attention_head_dim
    vae_channels: tuple[int, ...] = (16, 32, 32, 32)       # 4 levels -> 3 down-samplings -> 8x
    vae_layers_per_block: int = 1
    vae_groups: int = 2              # channels per GroupNorm group: 8-16, as in FLUX's VAE; 2 per group
                                     # made flat regions' colour all but invisible to the tiny VAE
    vae_logvar_init: float = -6.0    # posterior std e^-3 at the start: the decoder learns from near-mode latents
    text_layers: int = 1
    seed: int = 0
    words: tuple[str, ...] = field(default_factory=tuple)  # extra whole-word tokens (the toy vocabulary)

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> "ToyModelConfig":
        values = dict(values or {})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model keys {sorted(unknown)}; accepted: {sorted(cls.__dataclass_fields__)}")
        for key in ("axes_dims_rope", "vae_channels", "words"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_toy_flux_kontext(cfg: ToyModelConfig) -> FluxKontextPipeline:
    """A seeded, untrained toy `FluxKontextPipeline` of the real classes."""
    if sum(cfg.axes_dims_rope) != cfg.attention_head_dim:
        raise ValueError(f"axes_dims_rope {cfg.axes_dims_rope} must sum to attention_head_dim {cfg.attention_head_dim}")
    tokenizer, tokenizer_2 = build_clip_tokenizer(cfg.words), build_t5_tokenizer(cfg.words)
    tokenizer_2.model_max_length = T5_LENGTH
    with _seeded(cfg.seed):
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=2 * TEXT_DIM,
            projection_dim=TEXT_DIM, num_hidden_layers=cfg.text_layers, num_attention_heads=2,
            max_position_embeddings=tokenizer.model_max_length, hidden_act="quick_gelu",
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id)).eval()
    with _seeded(cfg.seed):
        text_encoder_2 = T5EncoderModel(T5Config(
            vocab_size=len(tokenizer_2), d_model=TEXT_DIM, d_kv=16, d_ff=2 * TEXT_DIM, num_layers=cfg.text_layers,
            num_heads=2, relative_attention_num_buckets=8, relative_attention_max_distance=32,
            feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=tokenizer_2.pad_token_id,
            eos_token_id=tokenizer_2.eos_token_id, decoder_start_token_id=tokenizer_2.pad_token_id)).eval()
    with _seeded(cfg.seed):
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=cfg.num_layers, num_single_layers=cfg.num_single_layers,
            attention_head_dim=cfg.attention_head_dim, num_attention_heads=cfg.num_attention_heads,
            joint_attention_dim=TEXT_DIM, pooled_projection_dim=TEXT_DIM, guidance_embeds=False,
            axes_dims_rope=tuple(cfg.axes_dims_rope))
    with _seeded(cfg.seed):
        n = len(cfg.vae_channels)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(cfg.vae_channels),
            layers_per_block=cfg.vae_layers_per_block, latent_channels=16, norm_num_groups=cfg.vae_groups,
            sample_size=cfg.image_size, scaling_factor=1.0, shift_factor=0.0,
            use_quant_conv=False, use_post_quant_conv=False)
        with torch.no_grad():   # the encoder's last conv emits [mean, logvar]; start with a small variance
            vae.encoder.conv_out.bias[vae.config.latent_channels:] = cfg.vae_logvar_init
    for module in (text_encoder, text_encoder_2):
        module.requires_grad_(False)
    return FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_KONTEXT_SCHEDULER_CONFIG), vae=vae,
        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
        transformer=transformer)


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
def encode_text(pipe: FluxKontextPipeline, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(T5 sequence B x T5_LENGTH x D, CLIP pooled B x D, text ids T5_LENGTH x 3), exactly as at inference."""
    embeds, pooled, text_ids = pipe.encode_prompt(prompt=list(prompts), prompt_2=None, device=pipe.vae.device,
                                                  num_images_per_prompt=1, max_sequence_length=T5_LENGTH)
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
                       noise: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """‖v_θ(z_t, σ, z_src, c) − (ε − z_tgt)‖², mean over batch, tokens and channels.

    `keep` (bool, batch x source tokens) drops reference tokens per sample (Sparse Context's training): the
    dropped ones are hidden as attention keys in every layer, which for the noisy tokens - all the loss sees -
    equals gathering the kept ones, while samples keep different counts in one batch."""
    s = sigmas.to(z_tgt.dtype).view(-1, 1, 1)
    z_t = (1 - s) * z_tgt + s * noise
    attention = None
    if keep is not None:
        attention = {"attention_mask": key_mask(keep.to(z_t.device), prompt_embeds.shape[1], z_t.shape[1])}
    v = transformer(hidden_states=torch.cat([z_t, z_src], dim=1), timestep=sigmas.to(z_tgt.dtype),
                    guidance=None, pooled_projections=pooled, encoder_hidden_states=prompt_embeds,
                    txt_ids=text_ids, img_ids=torch.cat([noisy_ids, source_ids], dim=0),
                    joint_attention_kwargs=attention, return_dict=False)[0][:, : z_t.shape[1]]
    return F.mse_loss(v.float(), (noise - z_tgt).float())


class VaeLoss(torch.nn.Module):
    """Reconstruction (L1 + MSE on [-1, 1] pixels) + a tiny KL, as latent-diffusion VAEs are trained
    (without the adversarial and perceptual terms: toy images are flat colours and smooth gradients).
    A module, so that Ray Train's DDP wrapper sees encode and decode in one forward."""

    def __init__(self, vae: AutoencoderKL, kl_weight: float = 1e-6) -> None:
        super().__init__()
        self.vae, self.kl_weight = vae, kl_weight

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(pixels).latent_dist
        recon = self.vae.decode(posterior.sample(), return_dict=False)[0]
        l1, mse = F.l1_loss(recon, pixels), F.mse_loss(recon, pixels)
        kl = posterior.kl().mean() / pixels[0].numel()
        return l1 + mse + self.kl_weight * kl, l1.detach(), mse.detach(), kl.detach()


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of uint8 images (data range 1 after /255), over the True pixels of `mask` when given."""
    x, y = a.astype(np.float64) / 255, b.astype(np.float64) / 255
    err = (x - y) ** 2
    if mask is not None:
        if not mask.any():
            return float("nan")
        err = err[mask]
    mse = float(err.mean())
    return float("inf") if mse == 0 else 10 * math.log10(1 / mse)


@torch.no_grad()
def set_latent_normalisation(pipe: FluxKontextPipeline, pixels: torch.Tensor) -> tuple[float, float]:
    """Set the VAE's shift_factor / scaling_factor so that its latents have mean 0 and std 1 on `pixels`
    (the role those two numbers play in the real FLUX VAE config)."""
    z = pipe.vae.encode(pixels.to(pipe.vae.device, pipe.vae.dtype)).latent_dist.mode()
    shift, scale = float(z.mean()), float(1.0 / z.std())
    pipe.vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    return shift, scale


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
                 instructions: Sequence[str]) -> Batch:
    both = encode_latents(pipe, to_pixels(np.concatenate([sources, targets])))
    n = len(sources)
    embeds, pooled, text_ids = encode_text(pipe, instructions)
    return Batch(z_src=both[:n], z_tgt=both[n:], prompt_embeds=embeds, pooled=pooled, text_ids=text_ids)


def transformer_step(pipe: FluxKontextPipeline, optimizer: torch.optim.Optimizer, batch: Batch,
                     generator: torch.Generator, grad_clip: float = 1.0,
                     model: torch.nn.Module | None = None,
                     reference_drop: tuple[float, float] | None = None) -> float:
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
                              batch.text_ids, noisy_ids, source_ids, sigmas, noise, keep=keep)
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


def vae_step(loss_module: torch.nn.Module, optimizer: torch.optim.Optimizer, pixels: torch.Tensor,
             grad_clip: float = 1.0) -> dict[str, float]:
    """One optimizer step of the VAE reconstruction loss; `loss_module` is a `VaeLoss`, possibly DDP-wrapped."""
    loss_module.train()
    loss, l1, mse, kl = loss_module(pixels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(loss_module.parameters(), grad_clip)
    optimizer.step()
    return {"loss": float(loss.detach()), "l1": float(l1), "mse": float(mse), "kl": float(kl)}
