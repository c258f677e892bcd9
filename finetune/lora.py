"""LoRA adapters on the transformer for fine-tuning, through diffusers' peft integration: added, saved apart
from the base weights, and checkpointed (Sparse Context's fine-tuning of the real checkpoints, where full
fine-tuning does not fit). Loading a saved adapter for inference is `actors.lora.load_lora`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from actors.lora import ADAPTER

# The attention projections of both families (Flux dual/single blocks, Qwen blocks); peft matches suffixes.
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


def add_lora(transformer: torch.nn.Module, rank: int = 16, alpha: float | None = None,
             targets: Sequence[str] = DEFAULT_TARGETS, name: str = ADAPTER) -> list[torch.nn.Parameter]:
    """Add a LoRA adapter and freeze everything else; returns the trainable (LoRA) parameters."""
    from peft import LoraConfig

    present = {n.rsplit(".", 1)[-1] for n, _ in transformer.named_modules()} | \
              {".".join(n.rsplit(".", 2)[-2:]) for n, _ in transformer.named_modules()}
    targets = [t for t in targets if t in present]
    if not targets:
        raise ValueError("none of the LoRA target modules exist in this transformer")
    config = LoraConfig(r=int(rank), lora_alpha=float(alpha if alpha is not None else rank),
                        init_lora_weights="gaussian", target_modules=targets)
    transformer.requires_grad_(False)
    transformer.add_adapter(config, adapter_name=name)
    return [p for n, p in transformer.named_parameters() if "lora_" in n and p.requires_grad]


def save_lora(pipe: Any, directory: str | Path, name: str = ADAPTER) -> Path:
    """Write only the adapter (diffusers' LoRA format, safetensors) next to nothing else."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.transformer, adapter_name=name))
    type(pipe).save_lora_weights(str(directory), transformer_lora_layers=layers, safe_serialization=True)
    return directory


def adapter_state(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors under the module's own (peft) names: what a training checkpoint must hold
    besides the untouched base weights."""
    return {k: v for k, v in transformer.state_dict().items() if "lora_" in k}


def load_adapter_state(transformer: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put `adapter_state`'s tensors back into a transformer that has the same adapter added."""
    result = transformer.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        raise ValueError(f"adapter state does not fit this transformer: unexpected {result.unexpected_keys[:3]}, "
                         f"missing {missing[:3]}")
