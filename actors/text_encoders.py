"""Where a pipeline's text encoders live between prompts: on the card ("resident", diffusers' default) or in
host memory ("offload"), moved onto the card only while a prompt is encoded.

Text encoders are used once per edit, before the first step, yet stay resident for all of it: 9.1 GiB of
FLUX.1-Kontext's 31 GiB (CLIP + T5-XXL), 15.4 GiB of Qwen-Image-Edit's 54 GiB (Qwen2.5-VL), 45 GiB of
FLUX.2 [dev]'s 105 GiB (Mistral Small 3.1). Offloading them trades that memory for one host-to-card copy per
edit (pinned host memory: about 25 GB/s on PCIe Gen5, so ~0.4 s for T5 + CLIP, ~0.6 s for Qwen2.5-VL, ~1.8 s for
Mistral, estimates); nothing is copied back: inference leaves the weights as they were.
Unlike diffusers' `enable_model_cpu_offload`, the transformer never moves: only the encoders do.

The placement is a property of the loaded pipeline, read off its modules (text encoders on the CPU while the
transformer is on an accelerator), so an edit needs no flag and holds no state of it.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator, Literal

import torch

Placement = Literal["resident", "offload"]
PLACEMENTS: tuple[str, ...] = ("resident", "offload")


def text_encoder_modules(pipe: Any) -> list[torch.nn.Module]:
    """The pipeline's text encoders (`text_encoder`, `text_encoder_2`, ...), as diffusers names them."""
    components = getattr(pipe, "components", {}) or {}
    return [m for name, m in sorted(components.items())
            if name.startswith("text_encoder") and isinstance(m, torch.nn.Module)]


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def is_offloaded(pipe: Any) -> bool:
    """Text encoders in host memory while the transformer runs on an accelerator."""
    encoders = text_encoder_modules(pipe)
    card = _device_of(pipe.transformer)
    return card.type != "cpu" and any(_device_of(m).type == "cpu" for m in encoders)


def placement_of(pipe: Any) -> Placement:
    return "offload" if is_offloaded(pipe) else "resident"


def offload_text_encoders(pipe: Any) -> None:
    """Move the text encoders to host memory, pinned where an accelerator will read them (faster copies)."""
    pin = _device_of(pipe.transformer).type == "cuda"
    for module in text_encoder_modules(pipe):
        module.to("cpu")
        if pin:
            for tensor in (*module.parameters(), *module.buffers()):
                tensor.data = tensor.data.pin_memory()


def _tensors(modules: list[torch.nn.Module]) -> list[torch.Tensor]:
    return [t for m in modules for t in (*m.parameters(), *m.buffers())]


@contextlib.contextmanager
def encoders_on_card(pipe: Any, seconds: list[float]) -> Iterator[None]:
    """While a prompt is encoded: offloaded text encoders on the transformer's device. Each parameter and
    buffer swaps contents with its card copy (`torch.utils.swap_tensors`: the module's own objects, so hooks and
    tied weights stay intact), and swaps back afterwards whatever happens: the host tensors (pinned) come back
    as they were, nothing is copied back (the weights did not change) and the card copies are freed. Appends
    the seconds the move took to `seconds`."""
    if not is_offloaded(pipe):
        yield
        return
    card, tensors = _device_of(pipe.transformer), _tensors(text_encoder_modules(pipe))
    started, swapped = time.perf_counter(), []
    try:
        for t in tensors:
            copy = t.detach().to(card, non_blocking=True)
            copy = torch.nn.Parameter(copy, requires_grad=t.requires_grad) if isinstance(t, torch.nn.Parameter) else copy
            torch.utils.swap_tensors(t, copy)
            swapped.append((t, copy))
        seconds.append(time.perf_counter() - started)
        yield
    finally:
        for t, copy in swapped:
            torch.utils.swap_tensors(t, copy)
        swapped.clear()
        if card.type == "cuda":
            torch.cuda.empty_cache()   # the encoders' blocks go back before the transformer's peak
