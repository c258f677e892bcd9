"""Edit defaults a model carries with its saved files (`dropedit.json` beside `model_index.json`).

diffusers' pipelines call with `max_sequence_length=512` and accept any size; a model trained otherwise
(the toy model: 32-token prompts, 128x128 only) says so in this file, so that our defaults follow the
model and `full` still equals diffusers given the same call. A folder without the file has diffusers'
defaults and no size restriction.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE = "dropedit.json"
PREDICTIONS = ("velocity", "reference_residual", "residual_flow")   # actors.reference_residual
DIFFUSERS_MAX_SEQUENCE_LENGTH = 512   # FluxKontextPipeline / QwenImageEditPipeline.__call__ default


@dataclass(frozen=True)
class ModelDefaults:
    max_sequence_length: int = DIFFUSERS_MAX_SEQUENCE_LENGTH
    sizes: tuple[tuple[int, int], ...] = ()    # (height, width) the model was trained at; () = any
    steps: int | None = None                   # sampling steps the model was evaluated with; None = the family's
    prediction: str = "velocity"               # or one of actors.reference_residual's (toy v3)

    @property
    def default_size(self) -> tuple[int, int] | None:
        return self.sizes[0] if self.sizes else None

    def size_problem(self, height: int, width: int) -> str | None:
        """Why (height, width) is outside what the model was trained at, or None."""
        if not self.sizes or (height, width) in self.sizes:
            return None
        known = ", ".join(f"{w}x{h}" for h, w in self.sizes)
        return f"the model was trained at {known} only; {width}x{height} is out of its distribution"


def read_defaults(folder: str | Path | None) -> ModelDefaults:
    """The defaults saved in `folder`, or diffusers' own when there is no file (or no local folder)."""
    if folder is None or not str(folder) or "://" in str(folder):
        return ModelDefaults()
    path = Path(folder) / FILE
    if not path.is_file():
        return ModelDefaults()
    raw = json.loads(path.read_text())
    sizes = tuple((int(h), int(w)) for h, w in raw.get("sizes", ()))
    steps = raw.get("steps")
    prediction = str(raw.get("prediction", "velocity"))
    if prediction not in PREDICTIONS:
        raise ValueError(f"{path}: prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")
    return ModelDefaults(int(raw.get("max_sequence_length", DIFFUSERS_MAX_SEQUENCE_LENGTH)), sizes,
                         None if steps is None else int(steps), prediction)


def defaults_of(pipe: Any) -> ModelDefaults:
    """The defaults of a loaded pipeline, read from the folder it was loaded from."""
    return read_defaults(getattr(pipe.config, "_name_or_path", None))


def write_defaults(folder: str | Path, defaults: ModelDefaults, why: str) -> Path:
    path = Path(folder) / FILE
    raw: dict[str, Any] = {"max_sequence_length": defaults.max_sequence_length,
                           "sizes": [list(s) for s in defaults.sizes], "why": why}
    if defaults.prediction != "velocity":
        raw["prediction"] = defaults.prediction
    path.write_text(json.dumps(raw, indent=2) + "\n")
    return path
