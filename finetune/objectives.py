"""Which flow-matching objective a model family trains with: one entry per family that can be fine-tuned
(a family without one cannot be: `finetune.config` refuses its models before any worker starts)."""
from __future__ import annotations

from typing import Any

from .flux import FluxObjective
from .objective import FamilyObjective
from .qwen import QwenObjective

OBJECTIVES: dict[str, type] = {"flux": FluxObjective, "qwen": QwenObjective}


def objective_for(pipe: Any, max_sequence_length: int | None = None, guidance: float | None = None,
                  edit_weight: float = 0.0) -> FamilyObjective:
    """The family's objective for a loaded pipeline (`edit_weight`: Flux only, the toy's edit-weighted loss)."""
    from actors.models import family_of

    name = family_of(pipe).name
    if name not in OBJECTIVES:
        raise ValueError(f"model family {name!r} has no fine-tuning objective; accepted: {', '.join(OBJECTIVES)}")
    if name == "flux":
        return FluxObjective(pipe, max_sequence_length, guidance, edit_weight)
    if edit_weight:
        raise ValueError("edit_weight is implemented for the Flux family only")
    return OBJECTIVES[name](pipe, max_sequence_length)
