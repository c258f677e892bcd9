"""Loading a LoRA adapter saved by fine-tuning (`finetune.lora.save_lora`) onto a pipeline for inference,
fused into the transformer's weights. The training half (adding, saving, checkpointing adapters) is
`finetune/lora.py`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

ADAPTER = "dropedit"   # the adapter's name, as fine-tuning saves it


def load_lora(pipe: Any, directory: str | Path, fuse: bool = True) -> Any:
    """Load a saved adapter onto `pipe`; fused by default, so inference costs what the base model costs."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"LoRA path {str(directory)!r} is not a local folder")
    pipe.load_lora_weights(str(directory), adapter_name=ADAPTER)
    if fuse:
        pipe.fuse_lora(adapter_names=[ADAPTER])
        pipe.unload_lora_weights()   # the fused weights stay; the adapter modules go
    return pipe
