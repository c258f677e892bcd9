"""What identifies a transformer's architecture: its class, its depth and a hash of its config."""
from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from .routing import transformer_layers


def config_hash(transformer: torch.nn.Module) -> str:
    """sha256 (first 16 hex digits) of the transformer's config, keys sorted, private keys left out."""
    config = {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_folder_name(transformer: torch.nn.Module) -> str:
    """The name of the model folder the transformer was loaded from (`.../NAME/transformer`), "" if built here:
    two trained models of one config (the toy v1 and v2) share a config hash, not a folder."""
    path = str(getattr(transformer.config, "_name_or_path", "") or "").rstrip("/")
    parts = path.replace("\\", "/").split("/")
    return parts[-2] if len(parts) >= 2 and parts[-1] == "transformer" else ""


def describe(transformer: torch.nn.Module) -> dict[str, Any]:
    return {"class": type(transformer).__name__, "num_layers": len(transformer_layers(transformer)),
            "config_hash": config_hash(transformer), "model": model_folder_name(transformer)}
