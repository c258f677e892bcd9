"""Qwen-Image-Edit and Qwen-Image-Edit-Plus as the cost model prices them (`costs`): the real checkpoints'
transformer config and the text tokens of their two calls per step (true CFG)."""
from __future__ import annotations

from typing import Any

from ..family import Architecture

# Qwen-Image-Edit, transformer/config.json (Qwen/Qwen-Image-Edit on the hub); equal to the defaults of
# diffusers' QwenImageTransformer2DModel (0.42). Text length depends on the prompt: the Qwen2.5-VL encoder sees
# the source resized to ~1024² area (QwenImageEditPipeline), i.e. 1036² px -> 74² patches of 14 px -> 37² = 1369
# merged vision tokens, plus 2 vision markers, the instruction and 5 template tokens after the 64 dropped ones.
# Typical value used here: 1369 + 2 + 13 (a short instruction) + 5 = 1389 for the prompt, and 1369 + 2 + 1 + 5
# = 1377 for the negative prompt " " of true CFG, which makes two transformer calls per step.
QWEN_IMAGE_EDIT_CONFIG: dict[str, Any] = {
    "_class_name": "QwenImageTransformer2DModel", "patch_size": 2, "in_channels": 64, "out_channels": 16,
    "num_layers": 60, "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 3584,
    "guidance_embeds": False, "axes_dims_rope": [16, 56, 56],
}
QWEN_IMAGE_EDIT_TEXT_TOKENS = (1389, 1377)

# Qwen-Image-Edit-2509 ("Edit-Plus", several reference images), transformer/config.json: the same as
# Qwen-Image-Edit's (published copy: lightx2v/Qwen-Image-Lightning, Qwen-Image-Edit-2509/config.json).
QWEN_IMAGE_EDIT_PLUS_CONFIG: dict[str, Any] = dict(QWEN_IMAGE_EDIT_CONFIG)
# QwenImageEditPlusPipeline shows the text encoder every reference at CONDITION_IMAGE_SIZE = 384² area: a square
# one becomes 392² after the processor's 28-px rounding -> 28² patches -> 14² = 196 merged vision tokens. Each
# reference is announced as "Picture i: <|vision_start|><|image_pad|>…<|vision_end|>": 5 text tokens
# ("Picture", " ", "i", ":", " " with Qwen2's pre-tokenizer, i < 10) + 2 markers. Approximate to a few tokens
# (the Plus system prompt may not be exactly the 64 dropped ones), which moves the ratios by < 0.1%.
EDIT_PLUS_VISION_TOKENS = 196
EDIT_PLUS_PICTURE_TOKENS = 5 + 2


def edit_plus_text_tokens(references: int, instruction_tokens: int = 13,
                          vision_tokens: int = EDIT_PLUS_VISION_TOKENS) -> tuple[int, int]:
    """Text tokens of the two calls of one Qwen-Image-Edit-Plus step (prompt, negative prompt " ") with
    `references` square reference images; 5 template tokens follow the user content, as for Qwen-Image-Edit."""
    if references < 1:
        raise ValueError(f"references must be >= 1, got {references}")
    images = references * (EDIT_PLUS_PICTURE_TOKENS + vision_tokens)
    return images + instruction_tokens + 5, images + 1 + 5


def _edit_text_tokens(references: int) -> tuple[int, ...]:
    return QWEN_IMAGE_EDIT_TEXT_TOKENS   # one source image, seen by the text encoder at ~1024² area


# parameters: transformer 20.4 B; Qwen2.5-VL 7B + VAE 8.4 B (the same for Edit-Plus)
QWEN_IMAGE_EDIT_ARCH = Architecture(name="Qwen-Image-Edit", transformer=QWEN_IMAGE_EDIT_CONFIG,
                                    text_tokens=_edit_text_tokens, params=20.4e9, encoder_params=8.4e9,
                                    true_cfg=True)
QWEN_IMAGE_EDIT_PLUS_ARCH = Architecture(name="Qwen-Image-Edit-Plus", transformer=QWEN_IMAGE_EDIT_PLUS_CONFIG,
                                         text_tokens=edit_plus_text_tokens, params=20.4e9, encoder_params=8.4e9,
                                         true_cfg=True)
