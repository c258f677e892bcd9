"""Checkpoints: what a resumed run needs to continue exactly (the trained weights, the optimizer, the step and
the log), plus the adapter in its loadable form (`lora/`, every checkpoint) or, at the end of a full
fine-tune, the whole pipeline (`model/`). Every rank gathers (FSDP's full state dicts are collective), rank 0
writes; every rank reports (Ray Train's report is collective); Ray Train copies the folder to
`storage_path/name` (local or object storage).

The FSDP path (`torch.distributed.checkpoint.state_dict`, full state dicts offloaded to rank 0's CPU) runs on
CUDA workers only and has not run in this repository's tests (no CUDA machine); DDP and single-worker runs
are tested."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def load_saved(checkpoint: Any) -> dict[str, Any] | None:
    """The state of the checkpoint Ray Train restored (None for a fresh run)."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=False)


def _trained(weights: dict[str, torch.Tensor], lora: bool) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in weights.items() if not lora or "lora_" in k}


def gather(pipe: Any, module: torch.nn.Module, optimizer: Any, lora: bool, fsdp: bool) -> tuple[dict, dict]:
    """(trained weights, optimizer state), whole, on rank 0 (FSDP: empty elsewhere). Called on every rank."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        weights, optim = get_state_dict(module, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return _trained(weights, lora), optim
    return _trained(pipe.transformer.state_dict(), lora), optimizer.state_dict()


def restore_weights(transformer: torch.nn.Module, saved: dict[str, Any], lora: bool) -> None:
    """Before wrapping: DDP then broadcasts them, and every worker starts from the same weights."""
    from .lora import load_adapter_state

    if lora:
        load_adapter_state(transformer, saved["weights"])
    else:
        transformer.load_state_dict(saved["weights"])


def restore_optimizer(module: torch.nn.Module, optimizer: Any, saved: dict[str, Any], fsdp: bool) -> None:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(module, optimizer, saved["optimizer"],
                                 options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(saved["optimizer"])


def save_pipeline(pipe: Any, folder: str | Path, transformer_weights: dict[str, torch.Tensor]) -> None:
    """The pipeline as `save_pretrained` lays it out, the transformer's weights given (gathered, not read from
    a possibly sharded module): loadable with `load_pipeline(name, path=folder)`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    pipe.save_config(str(folder))   # model_index.json
    for name, part in pipe.components.items():
        if part is None:
            continue
        if name == "transformer":
            part.save_config(str(folder / name))
            save_file({k: v.contiguous() for k, v in transformer_weights.items()},
                      str(folder / name / "diffusion_pytorch_model.safetensors"))
        else:
            part.save_pretrained(str(folder / name))


def report(pipe: Any, module: torch.nn.Module, optimizer: Any, state: dict[str, Any], metrics: dict[str, Any], *,
           rank: int, lora: bool, fsdp: bool, final: bool, extra: dict[str, Any] | None = None) -> None:
    """One checkpoint: `state.pt` (the run state, the trained transformer weights, the optimizer, and `extra`:
    the toy's VAE and phase), and `lora/` (every checkpoint) or `model/` (the last one, full fine-tuning)."""
    import ray.train

    from .lora import save_lora

    weights, optim = gather(pipe, module, optimizer, lora, fsdp)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            torch.save({**state, **(extra or {}), "weights": weights, "optimizer": optim},
                       os.path.join(tmp, "state.pt"))
            if lora:
                save_lora(pipe, os.path.join(tmp, "lora"))
            elif final:
                save_pipeline(pipe, os.path.join(tmp, "model"), weights)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({k: v for k, v in metrics.items() if v is not None}, checkpoint=checkpoint)
