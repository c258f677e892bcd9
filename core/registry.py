"""Plug-ins by name: frozen, validated pydantic classes that register where they are defined.

Policies, temporal caches and peers are each one kind of plug-in. A kind is a base class holding its
`Registry` (what the kind is called, and the error it raises); a plug-in is a subclass declared with a name:

    REGISTRY = Registry("policy", PolicyError)
    class Policy(Plugin):
        registry: ClassVar[Registry] = REGISTRY
    class KeepCorners(Policy, name="keep_corners"):   # REGISTRY["keep_corners"] is KeepCorners
        size: int = 1

`REGISTRY.make("keep_corners", size=2)` builds one; an unknown name, an unknown parameter or a bad value
raises the kind's error with one readable message (`validation_error` turns pydantic's errors into it).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Generic, Literal, TypeVar, get_args, get_origin

import annotated_types as at
import pydantic
from pydantic import ConfigDict
from pydantic.fields import FieldInfo


class PluginError(ValueError):
    """A plug-in name or parameter that cannot be accepted; the message names the accepted values."""


P = TypeVar("P", bound="Plugin")


class Registry(dict[str, type[P]], Generic[P]):
    """name -> plug-in class of one kind, in the order they were registered."""

    def __init__(self, kind: str, error: type[PluginError] = PluginError) -> None:
        super().__init__()
        self.kind, self.error = kind, error

    def add(self, name: str, cls: type[P]) -> None:
        """Registers `cls` as `name`; the same class defined again (a module reloaded) replaces itself, any
        other class under a taken name is refused."""
        taken = self.get(name)
        if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
            raise self.error(f"{self.kind} name {name!r} is taken by {taken.__module__}.{taken.__qualname__}")
        self[name] = cls

    def lookup(self, name: str) -> type[P]:
        if name not in self:
            raise self.error(f"unknown {self.kind} {name!r}; accepted: {', '.join(sorted(self))}")
        return self[name]

    def make(self, name: str, **params: Any) -> P:
        """The plug-in `name` built from `params`; unknown names and parameters raise the kind's error."""
        return self.lookup(name)(**params)


class Plugin(pydantic.BaseModel):
    """Immutable validated parameters of one plug-in; a kind's base sets `registry`, a plug-in gives `name=`."""

    # extra="forbid": an unknown parameter is an error, not silently ignored
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    name: ClassVar[str]
    registry: ClassVar[Registry[Any]]

    def __init_subclass__(cls, name: str | None = None, **kw: Any) -> None:
        """`class X(Kind, name="x")` registers X in the kind's registry under "x" (no name: not registered)."""
        super().__init_subclass__(**kw)
        if name is not None:
            cls.registry.add(name, cls)
            cls.name = name

    def __init__(self, **params: Any) -> None:
        try:
            super().__init__(**params)
        except pydantic.ValidationError as err:
            raise validation_error(type(self), err) from None

    def params(self) -> dict[str, Any]:
        """Every parameter, JSON-friendly, in declared order (what a row records)."""
        return self.model_dump(mode="json")


def validation_error(cls: type[Plugin], err: pydantic.ValidationError) -> PluginError:
    """One error of `cls`'s kind for all of `err`'s problems; unknown parameters alone when there are any."""
    registry = getattr(cls, "registry", None)
    kind, error = (registry.kind, registry.error) if registry is not None else ("plug-in", PluginError)
    label = f"{kind} {getattr(cls, 'name', cls.__name__)!r}"
    errors = err.errors()
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        accepted = ", ".join(cls.model_fields) or "none"
        return error(f"{label} has no parameter {', '.join(map(repr, unknown))}; accepted: {accepted}")
    return error(f"{label}: " + "; ".join(dict.fromkeys(field_message(cls.model_fields, e) for e in errors)))


# ValidationError types -> what the parameter must be
_KINDS = {
    "float_parsing": "a number", "float_type": "a number", "finite_number": "a finite number",
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "an integer",
    "bool_parsing": "a boolean (true/false)", "bool_type": "a boolean (true/false)",
    "string_type": "a string", "tuple_type": "a list", "list_type": "a list", "too_short": "a non-empty list",
}
_BOUNDS = {"greater_than_equal": "ge", "greater_than": "gt", "less_than_equal": "le", "less_than": "lt"}


def field_message(fields: dict[str, FieldInfo], error: Any) -> str:
    """One of pydantic's error dicts told as "parameter 'x' must be ..., got ..."; a `PluginError` raised by a
    plug-in's own validator is its message as written."""
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, PluginError):
        return str(cause)
    name = str(error["loc"][0]) if error["loc"] else "?"
    field = fields.get(name)
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
