"""Peers: accelerators a user would pick instead of token pruning, run as baselines through their own public
APIs on the same pipelines (`PEERS`, `make(name, **params)`, `available()`).

A peer edits through diffusers' own pipeline `__call__` (that is the API these tools patch), on the same
source as our editor sees it: resized to the edit size with the family's filter, at that size, with the same
seed, steps and guidance. Its result carries what it skipped, per CFG branch, like `EditResult`'s cache fields.
Each peer registers itself where its class is defined (`class CacheDit(Peer, name="cache-dit")`); its
library is an optional extra (`pip install -e ".[peers]"`), imported only when used; `available()` says
why one cannot run here (not installed, no CUDA, ...).
"""
from __future__ import annotations

from typing import Any

from .base import PEERS, Peer, PeerError, PeerResult
from . import cache_dit_peer, klein_kv_peer, regione_peer  # noqa: F401,E402  (they register, in this order)


def make(name: str, **params: Any) -> Peer:
    """A peer by name; unknown names and parameters raise PeerError naming what is accepted."""
    return PEERS.make(name, **params)


def available() -> dict[str, str | None]:
    """Each peer's reason it cannot run on this machine; None when it can."""
    return {name: cls.unavailable() for name, cls in PEERS.items()}


__all__ = ["PEERS", "Peer", "PeerError", "PeerResult", "available", "make"]
