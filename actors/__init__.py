"""What lives inside one GPU actor: model adapters, the sampling loop and the regularized sampler.

The names below are imported on first use (PEP 562): `import actors` stays light, so a process that only reads
the model registry (`actors.models`, e.g. the run's driver) never imports torch or diffusers."""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"Editor": "editor", "adapter_for": "editor", "EditResult": "edit_result", "StepTrace": "edit_result",
            "EditInputError": "adapter", "load_pipeline": "loading", "default_device": "loading", "MODELS": "models"}

__all__ = ["Editor", "EditResult", "StepTrace", "EditInputError", "load_pipeline", "adapter_for", "MODELS",
           "default_device"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    else:   # a submodule (`actors.caches`), as the eager imports used to make available
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value
