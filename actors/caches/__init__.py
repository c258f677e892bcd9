"""Temporal caches composed with token pruning: the cache axis of an edit (`Editor.edit(..., cache=...)`).

One file per technique (`first_block`, `magcache`, `taylorseer`), each a validated spec (`spec.CacheSpec`)
that starts a per-edit run (`runtime.CacheRun`) whose hooks live for that edit only. `make(name, **params)`
and `parse("name:k=v,...")` build specs; `names()` lists them.
"""
from .runtime import CacheRun, CacheRunInfo
from .spec import CACHES, CacheError, CacheSpec, make, names, parse

__all__ = ["CACHES", "CacheError", "CacheRun", "CacheRunInfo", "CacheSpec", "make", "names", "parse"]
