"""The cache axis: which temporal cache an edit runs, as a validated, immutable spec.

A spec is a frozen pydantic model of one technique's parameters that registers itself by name, like a
policy (`class FirstBlock(CacheSpec, name="first-block")`). `make(name, **params)` and `parse("name:k=v,...")`
build one; wrong names, types or ranges raise `CacheError` naming the accepted values. `spec.start(run)`
returns a fresh `CacheRun` for one edit (its hooks and every tensor it remembers), so no state outlives an
edit or is shared between edits, actors or CFG branches.

Every spec has the same "never skip" setting, which makes the edit equal to the policy alone bit for bit:
`threshold=0` for first-block and magcache (a call is skipped only when its error is strictly below the
threshold), `interval=1` for taylorseer (every call computed).
"""
from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import pydantic
from pydantic import ConfigDict, Field

from core.assignments import AssignmentError, parse_inline
from policies.params import Count, Fraction, Integer, Number, PolicyError, _message

if TYPE_CHECKING:
    from .runtime import CacheRun, CacheRunInfo


class CacheError(PolicyError):
    """A cache name or parameter that cannot be accepted; the message names the accepted values."""


# name -> spec class; filled by `CacheSpec` subclasses declared with `name=...` as their modules are imported
CACHES: dict[str, type["CacheSpec"]] = {}

Positive = Annotated[Integer, Field(ge=1)]
NonNegative = Annotated[Number, Field(ge=0.0)]


class CacheSpec(pydantic.BaseModel):
    """Immutable validated parameters of one temporal cache; subclasses declare fields and `start`."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    name: ClassVar[str]

    def __init_subclass__(cls, name: str | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if name is None:
            return
        taken = CACHES.get(name)
        if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
            raise CacheError(f"cache name {name!r} is taken by {taken.__module__}.{taken.__qualname__}")
        cls.name = name
        CACHES[name] = cls

    def __init__(self, **params: Any) -> None:
        try:
            super().__init__(**params)
        except pydantic.ValidationError as err:
            raise _cache_error(type(self), err) from None

    def params(self) -> dict[str, Any]:
        """Every parameter, JSON-friendly, in declared order (what a row records as `cache_params`)."""
        return self.model_dump(mode="json")

    def label(self) -> str:
        """`name:k=v,...` with the parameters that differ from the defaults; `parse(label())` rebuilds it."""
        default = type(self)().params() if _all_defaulted(type(self)) else {}
        changed = {k: v for k, v in self.params().items() if default.get(k, object()) != v}
        if not changed:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_text(v)}" for k, v in changed.items())

    @property
    def never_skips(self) -> bool:
        """True when this spec can skip nothing (the edit then equals the policy alone)."""
        return False

    @abc.abstractmethod
    def start(self, run: "CacheRunInfo") -> "CacheRun":
        """A fresh run for one edit."""


def _all_defaulted(cls: type[CacheSpec]) -> bool:
    return all(not f.is_required() for f in cls.model_fields.values())


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ";".join(map(str, value)) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _cache_error(cls: type[CacheSpec], err: pydantic.ValidationError) -> CacheError:
    errors = err.errors()
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        accepted = ", ".join(cls.model_fields) or "none"
        return CacheError(f"cache {getattr(cls, 'name', cls.__name__)!r} has no parameter "
                          f"{', '.join(map(repr, unknown))}; accepted: {accepted}")
    return CacheError(f"cache {getattr(cls, 'name', cls.__name__)!r}: "
                      + "; ".join(dict.fromkeys(_message(cls, e) for e in errors)))


def make(name: str, **params: Any) -> CacheSpec:
    """A cache spec by name; unknown names and parameters raise CacheError naming what is accepted."""
    from . import first_block, magcache, taylorseer  # noqa: F401  (they register)

    if name not in CACHES:
        raise CacheError(f"unknown cache {name!r}; accepted: {', '.join(sorted(CACHES))}")
    return CACHES[name](**params)


def parse(text: str | dict | CacheSpec | None) -> CacheSpec | None:
    """`"first-block:threshold=0.1,warmup=2"` (the CLI's `--cache`), a dict `{"name": ..., **params}` (a config),
    a spec (returned as is) or None / "" / "none" (no cache). Values by `core.assignments` (a list: `[a;b;c]`)."""
    if text is None or isinstance(text, CacheSpec):
        return text
    if isinstance(text, dict):
        params = dict(text)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise CacheError(f"a cache needs a name; accepted: {', '.join(sorted(names()))}")
        return make(name, **params)
    if not isinstance(text, str):
        raise CacheError(f"a cache is given as NAME[:k=v,...], got {text!r}")
    name, _, rest = text.strip().partition(":")
    if name.lower() in ("", "none"):
        if rest.strip():
            raise CacheError(f"cache {text!r}: no cache takes no parameters")
        return None
    try:
        params = parse_inline(rest)
    except AssignmentError as exc:
        raise CacheError(f"cache {text!r}: expected NAME:key=value,key=value ({exc})") from None
    return make(name.strip(), **params)


def names() -> list[str]:
    from . import first_block, magcache, taylorseer  # noqa: F401

    return sorted(CACHES)


__all__ = ["CacheError", "CacheSpec", "CACHES", "Count", "Fraction", "Integer", "NonNegative", "Number", "Positive",
           "make", "names", "parse"]
