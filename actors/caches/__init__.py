"""Temporal caches composed with token pruning: the cache axis of an edit (`Editor.edit(..., cache=...)`, or a
policy's `needs.cache`).

One file per technique (`first_block`, `magcache`, `taylorseer`, `velocity_decay`), each a validated spec (`spec.CacheSpec`)
that builds a per-edit run (`runtime.CacheRun`, an engine `Mechanism`) whose hooks live for that edit only.
`make(name, **params)` and `parse("name:k=v,...")` build specs; `names()` lists them. Importing this package
registers the built-in techniques, in this order.
"""
from .runtime import CacheRun, CacheRunInfo
from .spec import CACHES, CacheError, CacheSpec, make, names, parse
from . import first_block, magcache, taylorseer, velocity_decay  # noqa: F401,E402  (they register)

__all__ = ["CACHES", "CacheError", "CacheRun", "CacheRunInfo", "CacheSpec", "make", "names", "parse"]
