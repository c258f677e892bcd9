"""Config sections as pydantic models, and pydantic's errors said in the config's own terms.

Every section is frozen (a parsed config is a value that config_ids are computed from) and forbids
unknown keys (a typo must fail, not be silently ignored).  A ``ValidationError`` becomes one line per
problem, each starting with the dotted key: ``actors.max_size: must be >= actors.min_size (3)``,
``metrics.compute.0: got 'fid'; accepted values: background, vs_full, lpips``.  Credentials are refused
by key name before validation (pipeline.config), so no secret reaches these messages.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Sequence, get_args

from pydantic import BaseModel, ConfigDict, Strict, StringConstraints, ValidationError

# Strict: YAML "5" (a string) or `true` is not a size or a number.  Strict floats still accept ints.
NonEmptyStr = Annotated[str, Strict(), StringConstraints(strip_whitespace=True, min_length=1)]
Number = Annotated[float, Strict()]


class Section(BaseModel):
    """Base of every config section: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldError(ValueError):
    """Raised inside a validator to blame a key below the one being validated (``0.label``)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key, self.reason = key, reason


def one_or_more(value: Any) -> Any:
    """A scalar where a list is expected means a one-element list (``seeds: 3``)."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def empty_if_none(value: Any) -> Any:
    """An empty YAML section (``actors:``) is an empty mapping: every default."""
    return {} if value is None else value


def describe(exc: ValidationError, root: type[BaseModel], prefix: str = "") -> str:
    """One line per error of ``exc`` (raised validating ``root``): ``dotted.key: reason``."""
    return "\n".join(_line(err, root, prefix) for err in exc.errors())


def _line(err: Any, root: type[BaseModel], prefix: str) -> str:
    loc = tuple(err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    parts = [prefix] if prefix else []
    parts += [str(p) for p in loc] + ([cause.key] if isinstance(cause, FieldError) else [])
    where = ".".join(parts) or "config"
    reason = _reason(err, root, loc)
    # messages that already start with their key (storage.endpoint_url: ..., or a section's own described
    # error) are not prefixed twice
    return reason if reason.startswith((f"{where}: ", f"{where}.")) else f"{where}: {reason}"


_TYPE_REASONS = {
    "int_type": "must be an integer, got {input!r}",
    "int_from_float": "must be an integer, got {input!r}",
    "int_parsing": "must be an integer, got {input!r}",
    "float_type": "must be a number, got {input!r}",
    "float_parsing": "must be a number, got {input!r}",
    "string_type": "must be a non-empty string, got {input!r}",
    "string_too_short": "must be a non-empty string, got {input!r}",
    "bool_type": "must be true or false, got {input!r}",
    "too_short": "must not be empty",
    "tuple_type": "must be a list, got {input!r}",
    "list_type": "must be a list, got {input!r}",
    "dict_type": "must be a mapping, got {kind}",
    "model_type": "must be a mapping, got {kind}",
    "model_attributes_type": "must be a mapping, got {kind}",
}


def _reason(err: Any, root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind in ("value_error", "assertion_error"):
        cause = ctx.get("error")
        return cause.reason if isinstance(cause, FieldError) else str(cause)
    if kind == "extra_forbidden":
        section = _section_at(root, loc[:-1])
        return "unknown key" + (f"; accepted keys: {', '.join(section.model_fields)}" if section else "")
    if kind == "missing":
        section = _section_at(root, loc[:-1])
        field = section.model_fields.get(str(loc[-1])) if section else None
        is_text = field is not None and field.annotation is str
        return "must be a non-empty string; it is required" if is_text else "is required"
    if kind == "literal_error":
        accepted = re.findall(r"'((?:[^'\\]|\\.)*)'", ctx.get("expected", ""))
        return f"got {value!r}; accepted values: {', '.join(accepted)}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']}, got {value!r}"
    template = _TYPE_REASONS.get(kind)
    return template.format(input=value, kind=type(value).__name__) if template else err["msg"]


def _section_at(root: type[BaseModel], path: Sequence[Any]) -> type[BaseModel] | None:
    """The section class that ``path`` (a pydantic error location) points into; list indices skipped."""
    section: type[BaseModel] | None = root
    for part in path:
        if isinstance(part, int):
            continue
        field = section.model_fields.get(part) if section else None
        section = _model_in(field.annotation) if field else None
        if section is None:
            return None
    return section


def _model_in(annotation: Any) -> type[BaseModel] | None:
    # tuple[ModelSpec, ...], ModelSpec | None, ... -> ModelSpec
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_in, get_args(annotation)) if m is not None), None)
