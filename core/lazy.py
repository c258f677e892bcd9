"""A class or function named by "module:attribute" and imported on first use.

Why: the model registry and the families' records are data the driver reads (names, protocols, what a family
refuses) next to classes only a GPU worker needs (diffusers pipelines, adapters, attention processors). Naming
those by string keeps torch and diffusers out of every process that only plans a run (`jobs.ablate`'s driver);
calling or reading an attribute of the reference imports it, so the actors use it as the object itself."""
from __future__ import annotations

import importlib
from typing import Any


class Lazy:
    """`Lazy("diffusers:FluxKontextPipeline")`: called, or asked for an attribute, it is the named object.
    `__name__` answers without importing (a pipeline's class name is how the registry compares pipelines)."""

    __slots__ = ("target", "_value")

    def __init__(self, target: str) -> None:
        module, sep, attribute = target.partition(":")
        if not (module and sep and attribute):
            raise ValueError(f"a lazy reference is 'module:attribute', got {target!r}")
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "_value", None)

    @property
    def __name__(self) -> str:   # noqa: A003 - the named object's name, without importing it
        return self.target.rpartition(":")[2]

    def resolve(self) -> Any:
        value = object.__getattribute__(self, "_value")
        if value is None:
            module, _, attribute = self.target.partition(":")
            value = getattr(importlib.import_module(module), attribute)
            object.__setattr__(self, "_value", value)
        return value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in Lazy.__slots__:   # pickling and copying probe these: not the target's
            raise AttributeError(name)
        return getattr(self.resolve(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a lazy reference is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lazy) and other.target == self.target

    def __hash__(self) -> int:
        return hash(self.target)

    def __repr__(self) -> str:
        return f"Lazy({self.target!r})"

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return Lazy, (self.target,)


def resolve(obj: Any) -> Any:
    """The object itself: `obj` resolved when it is a `Lazy` reference, else `obj`."""
    return obj.resolve() if isinstance(obj, Lazy) else obj
