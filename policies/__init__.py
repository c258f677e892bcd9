"""Pruning policies behind one small interface (see `base`). `make(name, **params)` builds one."""
from __future__ import annotations

import inspect
from typing import Any

from .base import Plan, Policy, PolicyError, PolicyRun, RunInfo, Seen, Step
from .full import Full
from .random_drop import RandomDrop
from .sparse_context import SparseContext
from .spotedit import SpotEdit
from .tokendrop import TokenDrop
from .topi import ToPi

REGISTRY: dict[str, type] = {"full": Full, "random": RandomDrop, "tokendrop": TokenDrop, "topi": ToPi,
                             "sparse_context": SparseContext, "spotedit": SpotEdit}


def make(name: str, **params: Any) -> Policy:
    """Build a policy by name; unknown names and parameters raise PolicyError naming what is accepted."""
    if name not in REGISTRY:
        raise PolicyError(f"unknown policy {name!r}; accepted: {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise PolicyError(f"policy {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                          f"accepted: {', '.join(accepted) or 'none'}")
    return cls(**params)


__all__ = ["make", "REGISTRY", "Plan", "Policy", "PolicyError", "PolicyRun", "RunInfo", "Seen", "Step"]
