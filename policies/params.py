"""Parameter types shared by the policies, and pydantic's validation errors told in our words.

Policies declare their parameters as pydantic fields with these types; pydantic parses and checks them,
and `policy_error` turns its `ValidationError` into one `PolicyError` that names the parameter, what it
accepts and what it got.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal, get_args, get_origin

import annotated_types as at
from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError, ValidationInfo
from pydantic.fields import FieldInfo

if TYPE_CHECKING:
    from .base import Policy


class PolicyError(ValueError):
    """A policy name or parameter that cannot be accepted; the message names the accepted values."""


def _refuse_bool(kind: str) -> Callable[[Any, ValidationInfo], Any]:
    # pydantic's lax mode reads True as 1; a flag given where a number is expected is a mistake
    def check(value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool):
            raise PolicyError(f"parameter {info.field_name!r} must be {kind}, got {value!r}")
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


# ValidationError types -> what the parameter must be
_KINDS = {
    "float_parsing": "a number", "float_type": "a number", "finite_number": "a finite number",
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "an integer",
    "bool_parsing": "a boolean (true/false)", "bool_type": "a boolean (true/false)",
    "string_type": "a string", "tuple_type": "a list", "list_type": "a list", "too_short": "a non-empty list",
}
_BOUNDS = {"greater_than_equal": "ge", "greater_than": "gt", "less_than_equal": "le", "less_than": "lt"}


def policy_error(cls: type[Policy], err: ValidationError) -> PolicyError:
    """One PolicyError for all of `err`'s problems; unknown parameters alone when there are any."""
    errors = err.errors()
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        accepted = ", ".join(cls.model_fields) or "none"
        return PolicyError(f"policy {getattr(cls, 'name', cls.__name__)!r} has no parameter "
                           f"{', '.join(map(repr, unknown))}; accepted: {accepted}")
    return PolicyError("; ".join(dict.fromkeys(_message(cls, e) for e in errors)))


def _message(cls: type[Policy], error: Any) -> str:
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, PolicyError):   # our own validators write the whole message
        return str(cause)
    name = str(error["loc"][0]) if error["loc"] else "?"
    field = cls.model_fields.get(name)
    got, kind = error.get("input"), error["type"]
    if kind in _BOUNDS:
        return f"parameter {name!r} must {_range(field, error.get('ctx') or {})}, got {got!r}"
    if kind == "literal_error":
        choices = _find(field, lambda a: get_args(a) if get_origin(a) is Literal else None) or ()
        return f"parameter {name!r} must be one of {', '.join(map(str, choices))}, got {got!r}"
    if kind in _KINDS:
        return f"parameter {name!r} must be {_KINDS[kind]}, got {got!r}"
    return f"parameter {name!r}: {error['msg']}, got {got!r}"


def _range(field: FieldInfo | None, ctx: dict[str, Any]) -> str:
    """"lie in [0.0, 1.0)" when the field has both bounds, else "be >= 1"."""
    bounds: dict[str, float] = {}
    _find(field, lambda a: _collect_bounds(a, bounds))
    bounds = {**ctx, **bounds} if set(ctx) <= set(bounds) else dict(ctx)   # nested bounds: what pydantic said
    lo = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    hi = (bounds["le"], "]") if "le" in bounds else (bounds["lt"], ")") if "lt" in bounds else None
    if lo and hi:
        return f"lie in {lo[0]}{lo[1]}, {hi[0]}{hi[1]}"
    if lo:
        return f"be {'>=' if lo[0] == '[' else '>'} {lo[1]}"
    return f"be {'<=' if hi and hi[1] == ']' else '<'} {hi[0] if hi else '?'}"


def _collect_bounds(item: Any, bounds: dict[str, float]) -> None:
    for key, kind in (("ge", at.Ge), ("gt", at.Gt), ("le", at.Le), ("lt", at.Lt)):
        if isinstance(item, kind):
            bounds.setdefault(key, getattr(item, key))
    return None


def _find(item: Any, probe: Callable[[Any], Any]) -> Any:
    """Depth-first through a field's annotation and metadata; the first non-None answer of `probe`."""
    if item is None:
        return None
    found = probe(item)
    if found is not None:
        return found
    children = [item.annotation, *item.metadata] if isinstance(item, FieldInfo) else get_args(item)
    for child in children:
        found = _find(child, probe)
        if found is not None:
            return found
    return None
