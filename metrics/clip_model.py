"""CLIP similarity's torch side: torchmetrics' ``CLIPScore`` computation on a CLIP model read from a local
folder only.

PIE-Bench (PnPInversion ``evaluation/matrics_calculator.py``) scores CLIP ViT-L/14 with
``torchmetrics.multimodal.CLIPScore``: ``max(100 * cos(E_image, E_text), 0)``, the image a uint8
``C x H x W`` tensor handed to the CLIP processor, the text the target prompt (padded, cut to the text
model's positions).  ``clip_score`` is that computation, step for step (torchmetrics
``functional/multimodal/clip_score.py``: ``_get_features``, ``_clip_score_update``, ``CLIPScore.compute``).
The class itself is not used: torchmetrics 1.9 takes ``get_image_features``' return value as a tensor, and
transformers 5 returns an output object (the embedding is its ``pooler_output``), so it fails; and it accepts
a local folder only when the path contains "openai".  metrics.clip.Clip is the metric around this;
without a readable folder ``ClipUnavailable`` says why.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np


class ClipUnavailable(RuntimeError):
    """Why there is no CLIP model; the message ("unavailable: ...") goes into the rows' ``clip_status``."""


@dataclass
class ClipScorer:
    """A CLIP model and its processor, on ``device``."""

    model: Any
    processor: Any
    device: str = "cpu"


def load_clip(path: str, device: str = "cpu") -> ClipScorer:
    """``CLIPModel`` + ``CLIPProcessor`` from the local folder ``path`` (never the hub), eval mode."""
    folder = os.path.expanduser(path)
    if not os.path.isdir(folder):
        raise ClipUnavailable(f"unavailable: metrics.clip_model {path!r} is not a local folder")
    try:
        from transformers import CLIPModel, CLIPProcessor

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = CLIPModel.from_pretrained(folder, local_files_only=True).to(device).eval()
            processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
        return ClipScorer(model, processor, device)
    except Exception as exc:  # noqa: BLE001 - any failure means "no CLIP score", said clearly
        raise ClipUnavailable(f"unavailable: cannot load CLIP from {path}: {type(exc).__name__}: {exc}") from None


def _embedding(out: Any) -> Any:
    # transformers 4: the projected embedding itself; 5: an output object holding it as pooler_output
    return out if hasattr(out, "norm") else out.pooler_output


def clip_features(scorer: ClipScorer, image: Any, prompt: str) -> tuple[Any, Any]:
    """Unnormalised image and text embeddings, prepared as torchmetrics' ``_get_features`` does."""
    import torch

    model, processor = scorer.model, scorer.processor
    with torch.no_grad():
        pixels = processor(images=[image.cpu()], return_tensors="pt", padding=True)["pixel_values"]
        image_emb = _embedding(model.get_image_features(pixels.to(scorer.device)))
        text = processor(text=[prompt], return_tensors="pt", padding=True)
        limit = model.config.text_config.max_position_embeddings   # longer captions are cut, as there
        ids, attention = text["input_ids"][..., :limit], text["attention_mask"][..., :limit]
        text_emb = _embedding(model.get_text_features(ids.to(scorer.device), attention.to(scorer.device)))
    return image_emb, text_emb


def clip_score(scorer: ClipScorer, image: np.ndarray, prompt: str) -> float:
    """CLIPScore of one ``H x W x 3`` uint8 image against ``prompt``: ``max(100 * cos, 0)``."""
    import torch

    tensor = torch.tensor(np.asarray(image)).permute(2, 0, 1)   # PIE-Bench: torch.tensor(np.array(img))
    image_emb, text_emb = clip_features(scorer, tensor, prompt)
    image_emb = image_emb / image_emb.norm(p=2, dim=-1, keepdim=True)
    text_emb = text_emb / text_emb.norm(p=2, dim=-1, keepdim=True)
    score = 100 * (image_emb * text_emb).sum(axis=-1)
    return float(torch.clamp(score.mean(), min=0))
