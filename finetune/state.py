"""Checkpoints: what a resumed run needs to continue exactly (the trained weights, the optimizer, the step and
the log), plus the adapter in its loadable form (`lora/`, every checkpoint) or, at the end of a full
fine-tune, the whole pipeline (`model/`). Rank 0 writes; every rank reports (Ray Train's report is collective);
Ray Train copies the folder to `storage_path/name` (local or object storage)."""
from __future__ import annotations

import os
import tempfile
from typing import Any

import torch


def load_saved(checkpoint: Any) -> dict[str, Any] | None:
    """The state of the checkpoint Ray Train restored (None for a fresh run)."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=False)


def trained_weights(transformer: torch.nn.Module, lora: bool) -> dict[str, torch.Tensor]:
    from actors.lora import adapter_state

    weights = adapter_state(transformer) if lora else transformer.state_dict()
    return {k: v.detach().cpu().clone() for k, v in weights.items()}


def restore_weights(transformer: torch.nn.Module, saved: dict[str, Any], lora: bool) -> None:
    """Before wrapping: DDP then broadcasts them, and every worker starts from the same weights."""
    from actors.lora import load_adapter_state

    if lora:
        load_adapter_state(transformer, saved["weights"])
    else:
        transformer.load_state_dict(saved["weights"])


def report(pipe: Any, optimizer: Any, state: dict[str, Any], metrics: dict[str, Any], rank: int, lora: bool,
           final: bool) -> None:
    """One checkpoint: `state.pt`, and `lora/` (every checkpoint) or `model/` (the last one, full fine-tuning)."""
    import ray.train

    from actors.lora import save_lora

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            torch.save({**state, "weights": trained_weights(pipe.transformer, lora),
                        "optimizer": optimizer.state_dict()}, os.path.join(tmp, "state.pt"))
            if lora:
                save_lora(pipe, os.path.join(tmp, "lora"))
            elif final:
                pipe.save_pretrained(os.path.join(tmp, "model"), safe_serialization=True)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({k: v for k, v in metrics.items() if v is not None}, checkpoint=checkpoint)
