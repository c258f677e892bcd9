"""The `units:` block of a run config: how a record's configurations of one model entry become units of work
(`pipeline.unit_plan`) and how a unit without its record's `full` gets it (`pipeline.reference_readback`)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

from pipeline.validation import Section


def _choice_or_count(*words: str) -> Any:
    """A validator for a setting that is one of `words` or a whole number >= 1 (one readable error)."""
    def check(value: Any) -> Any:
        if value in words or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f"must be {', '.join(words)} or a whole number >= 1, got {value!r}")
    return BeforeValidator(check)


class UnitsConfig(Section):
    """How a record's configurations of one model entry become units of work (`pipeline.unit_plan`)."""

    # parts a split record's configurations go into: `auto` (the rule in `unit_plan`: from the records, the
    # configurations and the pool's max_size), `none` (one unit per record), or a number
    split: Annotated[Literal["auto", "none"] | int, _choice_or_count("auto", "none")] = "auto"
    # which records are split, counted from the end of each input file: `auto` (one round of the pool: as many
    # as actors.max_size), `all`, or a number
    records: Annotated[Literal["auto", "all"] | int, _choice_or_count("auto", "all")] = "auto"
    # how a unit without its record's `full` gets it: `read_back` its picture (`pipeline.reference_readback`)
    pairing: Literal["read_back", "rerun"] = "read_back"
