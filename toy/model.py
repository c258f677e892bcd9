"""The toy editing model: its sizes (`ToyModelConfig`) and a seeded, untrained `FluxKontextPipeline` of the
real classes (`FluxTransformer2DModel`, `AutoencoderKL`, `CLIPTextModel`, `T5EncoderModel`) at those sizes.

The text encoders stay frozen at their seeded random weights: a 1-layer T5 keeps token identity through its
residual path, and the trainable `context_embedder` and attention learn to read it (as FLUX freezes its own
encoders). The T5 context is 32 tokens, not FLUX's 512: the tokenizer's `model_max_length` and the saved
model say so (`dropedit.json`, `max_sequence_length`) and our editor pads prompts to that length by default,
so the transformer is trained on the very sequence it sees at inference (the longest toy instruction is 11
tokens). 512 padded tokens would make 80% of every sequence padding and the training 4-5x slower; diffusers'
own `__call__` needs `max_sequence_length=32` for this model. The toy transformer has no guidance embedding:
it is not guidance-distilled, so `guidance_scale` has no effect on it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from actors.tiny_models import FLUX_KONTEXT_SCHEDULER_CONFIG, TEXT_DIM, _seeded
from actors.tiny_tokenizers import build_clip_tokenizer, build_t5_tokenizer

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
    """A seeded, untrained toy `FluxKontextPipeline` of the real classes; the text encoders are frozen."""
    if sum(cfg.axes_dims_rope) != cfg.attention_head_dim:
        raise ValueError(f"axes_dims_rope {cfg.axes_dims_rope} must sum to attention_head_dim {cfg.attention_head_dim}")
    tokenizer, tokenizer_2 = build_clip_tokenizer(cfg.words), build_t5_tokenizer(cfg.words)
    tokenizer_2.model_max_length = T5_LENGTH
    text_encoder = _clip_encoder(cfg, tokenizer)
    text_encoder_2 = _t5_encoder(cfg, tokenizer_2)
    transformer, vae = _transformer(cfg), _vae(cfg)
    for module in (text_encoder, text_encoder_2):
        module.requires_grad_(False)
    return FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_KONTEXT_SCHEDULER_CONFIG), vae=vae,
        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
        transformer=transformer)


def _clip_encoder(cfg: ToyModelConfig, tokenizer: Any) -> CLIPTextModel:
    with _seeded(cfg.seed):
        return CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=2 * TEXT_DIM,
            projection_dim=TEXT_DIM, num_hidden_layers=cfg.text_layers, num_attention_heads=2,
            max_position_embeddings=tokenizer.model_max_length, hidden_act="quick_gelu",
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id)).eval()


def _t5_encoder(cfg: ToyModelConfig, tokenizer_2: Any) -> T5EncoderModel:
    with _seeded(cfg.seed):
        return T5EncoderModel(T5Config(
            vocab_size=len(tokenizer_2), d_model=TEXT_DIM, d_kv=16, d_ff=2 * TEXT_DIM, num_layers=cfg.text_layers,
            num_heads=2, relative_attention_num_buckets=8, relative_attention_max_distance=32,
            feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=tokenizer_2.pad_token_id,
            eos_token_id=tokenizer_2.eos_token_id, decoder_start_token_id=tokenizer_2.pad_token_id)).eval()


def _transformer(cfg: ToyModelConfig) -> FluxTransformer2DModel:
    with _seeded(cfg.seed):
        return FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=cfg.num_layers, num_single_layers=cfg.num_single_layers,
            attention_head_dim=cfg.attention_head_dim, num_attention_heads=cfg.num_attention_heads,
            joint_attention_dim=TEXT_DIM, pooled_projection_dim=TEXT_DIM, guidance_embeds=False,
            axes_dims_rope=tuple(cfg.axes_dims_rope))


def _vae(cfg: ToyModelConfig) -> AutoencoderKL:
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
    return vae
