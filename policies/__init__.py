"""Pruning policies behind one small interface (see `base`). `make(name, **params)` builds one.

Each policy registers itself in REGISTRY where its class is defined (`class X(Policy, name="x")`);
importing the built-in modules below fills it, in this order.
"""
from __future__ import annotations

from typing import Any

from .base import REGISTRY, CachedContext, Needs, Plan, Policy, PolicyError, PolicyRun, RunInfo, Seen, Step
from . import full, random_drop, tokendrop, topi, sparse_context, spotedit, focus, regione  # noqa: F401  (they register)


def make(name: str, **params: Any) -> Policy:
    """Build a policy by name; unknown names and parameters raise PolicyError naming what is accepted."""
    return REGISTRY.make(name, **params)


__all__ = ["make", "REGISTRY", "CachedContext", "Needs", "Plan", "Policy", "PolicyError", "PolicyRun",
           "RunInfo", "Seen", "Step"]
