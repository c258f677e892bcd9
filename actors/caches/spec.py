"""The cache axis: which temporal cache an edit runs, as a validated, immutable spec.

A spec is a frozen pydantic model of one technique's parameters that registers itself by name in `CACHES`,
like a policy (`class FirstBlock(CacheSpec, name="first-block")`; both are `core.registry.Plugin`s).
`make(name, **params)` and `parse("name:k=v,...")` build one; wrong names, types or ranges raise `CacheError`
naming the accepted values. `spec.mechanism(edit)` returns a fresh `CacheRun` for one edit, an engine
`Mechanism` like the policies' (its hooks and every tensor it remembers), so no state outlives an edit or is
shared between edits, actors or CFG branches.

Every spec has the same "never skip" setting, which makes the edit equal to the policy alone bit for bit:
`threshold=0` for first-block and magcache (a call is skipped only when its error is strictly below the
threshold), `interval=1` for taylorseer (every call computed).
"""
from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field

from core.registry import Plugin, Registry
from policies.params import Count, Fraction, Integer, Number

from .runtime import CacheError, CacheRun, CacheRunInfo   # CacheError lives with the hooks that raise it too
from core.assignments import AssignmentError, parse_inline

if TYPE_CHECKING:
    from ..mechanisms import EditContext


# name -> spec class; filled by `CacheSpec` subclasses declared with `name=...` (actors.caches imports them)
CACHES: Registry[CacheSpec] = Registry("cache", CacheError)

Positive = Annotated[Integer, Field(ge=1)]
NonNegative = Annotated[Number, Field(ge=0.0)]


class CacheSpec(Plugin):
    """Immutable validated parameters of one temporal cache; subclasses declare fields and `start`."""

    registry: ClassVar[Registry[CacheSpec]] = CACHES

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

    def refusal(self, family: str, steps: int) -> str | None:
        """Why this cache cannot run an edit of `family` with `steps` steps (None: it can); checked before any
        model work (the CLI, a run's preflight)."""
        return None

    @abc.abstractmethod
    def start(self, run: CacheRunInfo) -> CacheRun:
        """A fresh run for one edit."""

    def mechanism(self, edit: EditContext) -> CacheRun:
        """This cache as one edit's engine mechanism (what `actors.mechanisms.mechanisms_for` installs)."""
        return self.start(CacheRunInfo.of(edit))


def _all_defaulted(cls: type[CacheSpec]) -> bool:
    return all(not f.is_required() for f in cls.model_fields.values())


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ";".join(map(str, value)) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def make(name: str, **params: Any) -> CacheSpec:
    """A cache spec by name; unknown names and parameters raise CacheError naming what is accepted."""
    return CACHES.make(name, **params)


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
    return sorted(CACHES)


__all__ = ["CacheError", "CacheSpec", "CACHES", "Count", "Fraction", "Integer", "NonNegative", "Number", "Positive",
           "make", "names", "parse"]
