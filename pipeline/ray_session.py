"""Joining Ray: the cluster a `ray job submit` entrypoint runs in, or a local one."""
from __future__ import annotations

import os


def init_ray() -> None:
    """Connect to the cluster in RAY_ADDRESS (set inside `ray job submit`), else start a local one."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if os.environ.get("RAY_ADDRESS"):
        ray.init()   # inside `ray job submit`: the cluster's own
    else:
        # Some Ray Data plans stall with fewer than 4 logical CPUs, even on a 2-core machine.
        # address="local": a new cluster, never one `ray start` left on this machine (or its stale address)
        ray.init(address="local", num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False)
