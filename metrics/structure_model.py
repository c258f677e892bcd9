"""Structure distance's torch side: self-similarity of DINO ViT keys (the Splice loss PIE-Bench reports).

PIE-Bench (PnPInversion ``evaluation/matrics_calculator.py``, after Splice ``util/losses.py``): both images
in [0, 1] are resized to 224 on the short side (``Resize(224, max_size=480)``), ImageNet-normalised and
run through DINO ViT-B/8; the keys of block 11's attention (all heads concatenated, CLS token included)
give a tokens x tokens cosine self-similarity map; the distance is the MSE between the two maps.  The model
is a transformers ``ViTModel`` (DINO checkpoints are ViTs) read from a local folder only; the keys come
from a forward hook on block 11's key projection, whose output is exactly Splice's concatenated keys.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

LAYER = 11
SIZE, MAX_SIZE = 224, 480
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class StructureUnavailable(RuntimeError):
    """Why there is no DINO model; the message ("unavailable: ...") is the rows' ``structure_status``."""


def load_dino(path: str, device: str = "cpu") -> Any:
    """A ``ViTModel`` from the local folder ``path``, in eval mode on ``device``."""
    if not os.path.isdir(os.path.expanduser(path)):
        raise StructureUnavailable(f"unavailable: metrics.dino_model {path!r} is not a local folder")
    try:
        from transformers import ViTModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # DINO checkpoints have no pooler
            model = ViTModel.from_pretrained(os.path.expanduser(path), add_pooling_layer=False,
                                             local_files_only=True)
        key_projection(model, LAYER)
        return model.to(device).eval()
    except Exception as exc:  # noqa: BLE001 - any failure means "no structure distance", said clearly
        raise StructureUnavailable(
            f"unavailable: cannot load DINO ViT from {path}: {type(exc).__name__}: {exc}") from None


def key_projection(model: Any, layer: int) -> Any:
    """Block ``layer``'s attention key projection (transformers 5 names it ``k_proj``, 4.x ``key``)."""
    for name in (f"layers.{layer}.attention.k_proj", f"encoder.layer.{layer}.attention.attention.key"):
        try:
            return model.get_submodule(name)
        except AttributeError:
            continue
    raise ValueError(f"{type(model).__name__} has no attention key projection in block {layer}")


def preprocess(image: np.ndarray, device: str = "cpu") -> Any:
    """``H x W x 3`` float image in [0, 1] -> ``1 x 3 x h x w``: short side 224 (long <= 480), ImageNet norm."""
    import torch
    from torchvision import transforms

    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    transform = transforms.Compose([transforms.Resize(SIZE, max_size=MAX_SIZE, antialias=True),
                                    transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return transform(tensor).to(device)


def layer_keys(model: Any, pixels: Any, layer: int = LAYER) -> Any:
    """Keys of block ``layer`` for one image: ``tokens x dim`` (CLS first, heads concatenated)."""
    import torch

    captured: list[Any] = []
    handle = key_projection(model, layer).register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.no_grad():
            # DINO runs at any size: position embeddings are interpolated off the 224 grid
            model(pixel_values=pixels, interpolate_pos_encoding=True)
    finally:
        handle.remove()
    return captured[0][0]


def self_similarity(keys: Any, eps: float = 1e-8) -> Any:
    """Cosine self-similarity of token keys, as Splice's ``attn_cosine_sim``: ``tokens x tokens``."""
    norms = keys.norm(dim=-1, keepdim=True)
    return (keys @ keys.T) / (norms @ norms.T).clamp(min=eps)


def structure_distance(model: Any, source: np.ndarray, edited: np.ndarray, device: str = "cpu") -> float:
    """MSE between the key self-similarity maps of ``source`` and ``edited`` (float images in [0, 1])."""
    import torch.nn.functional as F

    maps = [self_similarity(layer_keys(model, preprocess(img, device))) for img in (source, edited)]
    return float(F.mse_loss(maps[1], maps[0]))
