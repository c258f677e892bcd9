"""Load a diffusers editing pipeline by name (`actors.models`): real checkpoints from a local folder, tiny
ones built here."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .adapter import EditInputError
from .attention_backend import set_backend
from .text_encoders import PLACEMENTS, Placement, offload_text_encoders
from .model_defaults import read_defaults
from .reference_residual import apply_prediction
from .models import MODELS, model, protocol_of  # noqa: F401  (protocol_of: its old home; it reads data only)


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPU, as the papers run; fp32 on CPU, where bf16 is slow and parity needs full precision."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_pipeline(name: str, path: str | Path | None = None, device: str | torch.device | None = None,
                  dtype: torch.dtype | str | None = None, lora: str | Path | None = None,
                  attention_backend: str | None = None, text_encoders: Placement = "resident") -> Any:
    """A diffusers pipeline for `name`, from `path` (a local folder written by `save_pretrained`) when given,
    with the LoRA adapter saved in the folder `lora` fused into its transformer when given.

    A checkpoint loads with `device_map` onto its device: each weight goes from the file to the card, never the
    whole model staged in host RAM first (8 actors on a node would stage 260-460 GB). `attention_backend`: a
    diffusers dispatcher backend set on the transformer (`actors.attention_backend`); `text_encoders`:
    "offload" keeps them in host memory between prompts (`actors.text_encoders`).

    Nothing is downloaded: real checkpoints need a local path (or the pipeline's S3 sync to one).
    """
    if text_encoders not in PLACEMENTS:
        raise EditInputError(f"text_encoders must be one of {', '.join(PLACEMENTS)}, got {text_encoders!r}")
    if name not in MODELS:
        raise EditInputError(f"unknown model {name!r}; accepted: {', '.join(MODELS)}")
    spec = model(name)
    device = torch.device(device) if device is not None else default_device()
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    dtype = dtype or default_dtype(device)
    if path is None and spec.shipped is not None:
        path = spec.shipped
        if not path.is_dir():
            raise EditInputError(f"model {name!r} ships in {path}, which is missing (a non-editable install?): "
                                 "give its folder as path")
    if path is not None:
        if not Path(path).is_dir():
            raise EditInputError(f"model path {str(path)!r} is not a local folder")
        pipe = spec.pipeline.from_pretrained(str(path), dtype=dtype, local_files_only=True, device_map=device.type)
        apply_prediction(pipe.transformer, read_defaults(path).prediction)   # it travels with the model's files
    elif spec.tiny is not None:
        pipe = spec.tiny()
        if pipe.transformer.dtype != dtype:
            pipe = pipe.to(dtype=dtype)
    else:
        raise EditInputError(f"model {name!r} needs --model-path: a local folder with the diffusers checkpoint "
                             "(nothing is downloaded)")
    pipe = pipe.to(device)   # a no-op for a checkpoint placed by device_map (cuda:N beyond 0 moves here)
    if attention_backend is not None:
        set_backend(pipe.transformer, attention_backend)
    if lora is not None:
        from .lora import load_lora   # needs peft: only where adapters are used
        load_lora(pipe, lora)
    if text_encoders == "offload":
        offload_text_encoders(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe
