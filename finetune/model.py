"""The model a worker trains: the pipeline loaded by name (a local folder or an s3:// prefix synced once per
node), the frozen encoders, the transformer with a LoRA adapter (or all of it trainable), gradient checkpointing,
and the data-parallel wrapper (DDP; FSDP for full fine-tuning on CUDA)."""
from __future__ import annotations

from typing import Any

import torch

from .config import FinetuneConfig


def load_model(cfg: FinetuneConfig, device: torch.device) -> Any:
    """The pipeline on `device`: bf16 weights for a LoRA fine-tune on CUDA (the frozen base; peft keeps the
    adapter in fp32), fp32 otherwise (full fine-tuning keeps fp32 master weights; bf16 enters by autocast)."""
    import actors
    from pipeline.storage import localize_model_path

    path = cfg.model.path
    if path is not None:
        path = localize_model_path(path, cfg.model.cache_dir, cfg.data.storage or None)
    dtype = torch.bfloat16 if device.type == "cuda" and cfg.lora is not None else torch.float32
    pipe = actors.load_pipeline(cfg.model.name, path=path, device=device, dtype=dtype)
    for name in ("vae", "text_encoder", "text_encoder_2"):
        part = getattr(pipe, name, None)
        if part is not None:
            part.requires_grad_(False).eval()
    return pipe


def park_encoders(pipe: Any) -> None:
    """The encoders' work is done once every record is encoded: move them off the accelerator."""
    for name in ("vae", "text_encoder", "text_encoder_2"):
        part = getattr(pipe, name, None)
        if part is not None:
            part.to("cpu")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def make_trainable(pipe: Any, cfg: FinetuneConfig) -> list[torch.nn.Parameter]:
    """LoRA (seeded by the data seed, the same on every worker) or every transformer weight; gradient
    checkpointing when asked. Returns the parameters the optimizer updates."""
    transformer = pipe.transformer
    if cfg.lora is not None:
        from .lora import add_lora

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.data.seed)
            params = add_lora(transformer, rank=cfg.lora.rank, alpha=cfg.lora.alpha, targets=cfg.lora.targets)
    else:
        transformer.requires_grad_(True)
        params = list(transformer.parameters())
    if cfg.train.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    return params


def wrap(pipe: Any, cfg: FinetuneConfig, device: torch.device) -> torch.nn.Module:
    """The transformer for the training calls: DDP across workers, FSDP with `scaling.strategy: fsdp`
    (CUDA only: its CPU path is not what a 12 B fine-tune runs, and it is refused here rather than half-run)."""
    import ray.train.torch

    if cfg.scaling.strategy == "fsdp":
        if device.type != "cuda":
            raise ValueError("scaling.strategy fsdp needs CUDA workers; on CPU use ddp")
        return ray.train.torch.prepare_model(pipe.transformer, move_to_device=False, parallel_strategy="fsdp",
                                             parallel_strategy_kwargs={"use_orig_params": True})
    # Qwen's last block computes a text-stream output no loss sees: its weights (and adapters) get no gradient
    return ray.train.torch.prepare_model(pipe.transformer, move_to_device=False,
                                         parallel_strategy_kwargs={"find_unused_parameters": True})


def autocast(device: torch.device, setting: str):
    """bf16 autocast on CUDA (`auto`, `bf16`); off on CPU, where bf16 is slow and parity needs fp32."""
    enabled = device.type == "cuda" and setting in ("auto", "bf16")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)
