"""The papers' sampling protocol of each family's pipelines, as data: what an edit runs when it gives no steps,
guidance or resize filter. The adapters take their defaults from here, and the driver reads them without
importing an adapter (torch, diffusers): `Family.protocol_for`."""
from __future__ import annotations

from .family import Protocol

# the papers' protocol for FLUX.1-Kontext-dev (TokenDrop, ToPi, SpotEdit): 28 steps, distilled guidance 3.5, the
# source resized bicubically (TokenDrop; diffusers resizes with Lanczos)
FLUX_KONTEXT_PROTOCOL = Protocol(steps=28, guidance=3.5, resize_filter="bicubic")
# the papers' protocol for Qwen-Image-Edit (TokenDrop, SpotEdit) and its model card: 50 steps, true CFG 4.0 (two
# transformer calls per step), diffusers' own (Lanczos) resize
QWEN_IMAGE_EDIT_PROTOCOL = Protocol(steps=50, guidance=4.0, resize_filter="lanczos")
# FLUX.2 [klein]'s model card: 4 steps, guidance 1.0 (step-distilled: the pipeline ignores guidance); no paper
# protocol for the source resize, so diffusers' own (Lanczos); [klein] KV runs klein's
FLUX2_KLEIN_PROTOCOL = Protocol(steps=4, guidance=1.0, resize_filter="lanczos")
# FLUX.2 [dev] (Flux2Pipeline): what a call of the pipeline without them runs, klein's resize
FLUX2_DEV_PROTOCOL = Protocol(steps=50, guidance=4.0, resize_filter="lanczos")
