"""FLUX.2 [klein] 4B as the cost model prices it (`costs`): the real checkpoint's transformer config."""
from __future__ import annotations

from typing import Any

from ..family import Architecture

# black-forest-labs/FLUX.2-klein-4B transformer/config.json as diffusers' own conversion script writes it
# (scripts/convert_flux2_to_diffusers.py, model_type "klein-4b"); the checkpoint's file itself was not read
# here. joint_attention_dim 7680 = 3 stacked Qwen3-4B hidden states (layers 9, 18, 27) of width 2560.
FLUX2_KLEIN_4B_CONFIG: dict[str, Any] = {
    "_class_name": "Flux2Transformer2DModel", "patch_size": 1, "in_channels": 128, "out_channels": None,
    "num_layers": 5, "num_single_layers": 20, "attention_head_dim": 128, "num_attention_heads": 24,
    "joint_attention_dim": 7680, "timestep_guidance_channels": 256, "mlp_ratio": 3.0,
    "axes_dims_rope": [32, 32, 32, 32], "rope_theta": 2000, "eps": 1e-6, "guidance_embeds": False,
}
# Flux2KleinPipeline pads the chat-templated instruction to max_sequence_length=512 Qwen3 tokens; the
# reference images enter as image tokens, not text
FLUX2_KLEIN_TEXT_TOKENS = (512,)


def _text_tokens(references: int) -> tuple[int, ...]:
    return FLUX2_KLEIN_TEXT_TOKENS   # the distilled model: one call per step, no CFG


# parameters: transformer 3.876 B (counted from the config above on the meta device); text encoder Qwen3-4B
# (4.0 B by its model card) + AutoencoderKLFlux2's default (= released) config 0.084 B (counted)
FLUX2_KLEIN_4B = Architecture(name="FLUX.2-klein-4B", transformer=FLUX2_KLEIN_4B_CONFIG,
                              text_tokens=_text_tokens, params=3.876e9, encoder_params=4.084e9)
