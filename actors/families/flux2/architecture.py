"""FLUX.2 [klein] 4B and FLUX.2 [dev] as the cost model prices them (`costs`): the real checkpoints' transformer
configs."""
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

# black-forest-labs/FLUX.2-dev transformer/config.json as diffusers' conversion script writes it (model_type
# "flux2-dev"; guidance_embeds left at True), which is also Flux2Transformer2DModel's default config in diffusers
# 0.42; the checkpoint's file itself was not read here. joint_attention_dim 15360 = 3 stacked hidden states
# (layers 10, 20, 30: Flux2Pipeline's `text_encoder_out_layers`) of Mistral Small 3.2 (width 5120).
FLUX2_DEV_CONFIG: dict[str, Any] = {
    "_class_name": "Flux2Transformer2DModel", "patch_size": 1, "in_channels": 128, "out_channels": None,
    "num_layers": 8, "num_single_layers": 48, "attention_head_dim": 128, "num_attention_heads": 48,
    "joint_attention_dim": 15360, "timestep_guidance_channels": 256, "mlp_ratio": 3.0,
    "axes_dims_rope": [32, 32, 32, 32], "rope_theta": 2000, "eps": 1e-6, "guidance_embeds": True,
}


def _dev_text_tokens(references: int) -> tuple[int, ...]:
    # Flux2Pipeline pads the instruction to max_sequence_length=512 Mistral tokens; guidance-distilled: one call
    # per step, guidance through the guidance embedding
    return (512,)


# parameters: transformer 32.223 B (counted from the config above on the meta device); text encoder
# Mistral-Small-3.2-24B-Instruct-2506 (24 B by its name; the conversion script's text encoder) + the VAE
# (0.084 B, counted)
FLUX2_DEV_32B = Architecture(name="FLUX.2-dev", transformer=FLUX2_DEV_CONFIG, text_tokens=_dev_text_tokens,
                             params=32.223e9, encoder_params=24.084e9)

# black-forest-labs/FLUX.2-klein-9B (and its KV variant FLUX.2-klein-9b-kv, the same transformer trained for
# reference K/V reuse): the 4B config with the 9B sizes diffusers' conversion script gives model_type "klein-9b"
# (8 dual + 24 single blocks, 32 heads x 128, joint_attention_dim 12288 = 3 stacked Qwen3-8B hidden states of
# width 4096), as third-party trainers mirror it; the checkpoint's file itself was not read here.
FLUX2_KLEIN_9B_CONFIG: dict[str, Any] = {**FLUX2_KLEIN_4B_CONFIG, "num_layers": 8, "num_single_layers": 24,
                                         "num_attention_heads": 32, "joint_attention_dim": 12288}
# parameters: transformer 9.079 B (counted from the config above on the meta device); text encoder Qwen3-8B
# (8.2 B by its model card) + the VAE (0.084 B, counted)
FLUX2_KLEIN_9B = Architecture(name="FLUX.2-klein-9B", transformer=FLUX2_KLEIN_9B_CONFIG,
                              text_tokens=_text_tokens, params=9.079e9, encoder_params=8.284e9)
