"""Parameter types shared by the plug-ins (policies, caches, peers), and the policies' error.

Plug-ins declare their parameters as pydantic fields with these types; pydantic parses and checks them, and
`core.registry.validation_error` turns its `ValidationError` into one error that names the parameter, what it
accepts and what it got.
"""
from __future__ import annotations

from typing import Annotated, Any, Callable

from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError, ValidationInfo

from core.registry import PluginError


class PolicyError(PluginError):
    """A policy name or parameter that cannot be accepted; the message names the accepted values."""


def _refuse_bool(kind: str) -> Callable[[Any, ValidationInfo], Any]:
    # pydantic's lax mode reads True as 1; a flag given where a number is expected is a mistake
    def check(value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool):
            raise PluginError(f"parameter {info.field_name!r} must be {kind}, got {value!r}")
        return value
    return check


# Numbers as YAML or `--set` give them, strings included ("0.2"); booleans and NaN/inf are refused.
Number = Annotated[float, BeforeValidator(_refuse_bool("a number")), Field(allow_inf_nan=False)]
Integer = Annotated[int, BeforeValidator(_refuse_bool("an integer"))]
Fraction = Annotated[Number, Field(ge=0.0, le=1.0)]
Count = Annotated[Integer, Field(ge=0)]
Seed = Annotated[Integer, Field(ge=0)]
# Flags are plain `bool`: pydantic reads true/false, yes/no, on/off, 1/0 (strings too).

_LAYER_NUMBERS: TypeAdapter[tuple[int, ...]] = TypeAdapter(tuple[Count, ...])


def layer_numbers(value: Any, name: str = "layers") -> tuple[int, ...] | None:
    """Layer numbers from a list or a "13,18,31" string, sorted and unique; None when `value` is a word
    (or anything else that is not a list of numbers)."""
    numbers = value
    if isinstance(value, str):
        numbers = [p.strip() for p in value.strip("[]").split(",") if p.strip()]
        if not numbers or not all(p.lstrip("-").isdigit() for p in numbers):
            return None
    if not isinstance(numbers, (list, tuple)):
        return None
    try:
        return sorted_unique(_LAYER_NUMBERS.validate_python(numbers))
    except ValidationError:
        raise PolicyError(f"parameter {name!r} must list layer numbers >= 0, got {value!r}") from None


def sorted_unique(values: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(set(values)))
