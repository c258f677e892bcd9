"""FLUX.1-Kontext-dev as the cost model prices it (`costs`): the real checkpoint's transformer config."""
from __future__ import annotations

from typing import Any

from ..family import Architecture

# transformer/config.json (black-forest-labs/FLUX.1-Kontext-dev on the Hugging Face hub); equal to the defaults
# of diffusers' FluxTransformer2DModel (0.42). Text: T5 padded to max_sequence_length=512, which is what
# FluxKontextPipeline (and this family's adapter) passes. One transformer call per step (guidance is distilled
# into the `guidance` embedding, no CFG).
FLUX_KONTEXT_DEV_CONFIG: dict[str, Any] = {
    "_class_name": "FluxTransformer2DModel", "patch_size": 1, "in_channels": 64, "out_channels": None,
    "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24,
    "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
    "axes_dims_rope": [16, 56, 56],
}
FLUX_KONTEXT_TEXT_TOKENS = (512,)


def _text_tokens(references: int) -> tuple[int, ...]:
    return FLUX_KONTEXT_TEXT_TOKENS   # T5 sees the instruction only, padded to 512


# parameters: transformer 11.9 B; CLIP-L + T5-XXL + VAE 4.9 B
FLUX_KONTEXT_DEV = Architecture(name="FLUX.1-Kontext-dev", transformer=FLUX_KONTEXT_DEV_CONFIG,
                                text_tokens=_text_tokens, params=11.9e9, encoder_params=4.9e9)
