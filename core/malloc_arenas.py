"""Fewer glibc malloc arenas for the driver process.

A Ray driver runs ~36 threads (Ray's core worker, gRPC, Ray Data's executor); glibc gives threads that contend
their own malloc arenas (up to 8 per core), and memory freed in one arena is not reused by another, so the
driver's resident set grew to a plateau well above what it holds: a 10k-record run rose from 245 MB (after 1k
records) to 303 MB before levelling off; with 2 arenas it levels off at 261 MB (`bench/driver_memory.py`,
README "Scaling"). `MALLOC_ARENA_MAX` set in the environment wins (glibc reads it at start)."""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8   # glibc's mallopt parameter number (malloc.h)
DRIVER_ARENAS = 2


def limit_malloc_arenas(arenas: int = DRIVER_ARENAS) -> bool:
    """Cap this process's malloc arenas at `arenas` (call before the threads start); False where it does not
    apply: not glibc, or MALLOC_ARENA_MAX already set."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        return False
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
