"""The books of one `dropedit simulate` run, kept in one small Ray actor (Ray and the standard library only, so
its process stays light): model loads, editing GPU-seconds, units done, the GPU-seconds spent re-running a
reference only for pairing, a per-unit trace, and the kill plan (actors and simulated nodes). All times are
simulated seconds from the moment the whole pool has loaded."""
from __future__ import annotations

import time
from typing import Any

import ray


@ray.remote(num_cpus=0)
class SimLedger:
    """Counts of one simulation and the plan of its faults.

    `kill_at`: one simulated time per actor kill; the first actors to load take them, one each.
    `node_kill_at`: simulated node index -> its kill time; the pool's first `expected` logical GPUs are its
    nodes' GPUs in load order, `per_node` to a node (an actor's GPUs on one node: `per_node` a multiple of the
    GPUs per actor). A restarted actor is on a replacement node, never killed."""

    def __init__(self, kill_at: list[float], expected: int, node_kill_at: dict[int, float] | None = None,
                 per_node: int = 8) -> None:
        self.kill_at, self.expected = sorted(kill_at), expected
        self.node_kill_at, self.per_node = dict(node_kill_at or {}), max(per_node, 1)
        self.start = time.time()   # reset when the pool is ready: actors compare their clocks with it
        self.loads, self.busy, self.pairing, self.killed = 0, 0.0, 0.0, 0
        self.nodes_killed: set[int] = set()
        self.units: set[str] = set()
        self.trace: list[tuple[str, str, float, float, float]] = []
        self.all_ready: float | None = None

    def loaded(self, gpus: int = 1) -> tuple[float | None, tuple[int, float | None] | None]:
        """Counts an actor's model loads (one per logical GPU it serves); returns its kill time (None: no actor
        kill) and its simulated node (index, kill time or None), None for a restarted actor."""
        slot = self.loads
        self.loads += gpus
        if slot < self.expected <= self.loads:
            self.all_ready = self.start = time.time()
        node = None
        if slot < self.expected:
            index = slot // self.per_node
            node = (index, self.node_kill_at.get(index))
        return (self.kill_at.pop(0) if self.kill_at else None), node

    def started(self) -> float | None:
        """The simulation's start (wall clock) once the whole pool has loaded, else None."""
        return self.all_ready

    def unit_done(self, actor: str, key: str, begun: float, ended: float, busy: float, pairing: float) -> None:
        self.busy += busy
        self.pairing += pairing
        self.units.add(key)
        self.trace.append((actor, key, round(begun, 3), round(ended, 3), round(busy, 3)))

    def died(self, busy: float, node: int | None) -> None:
        """An actor exited mid-unit: its unit's edits so far were GPU work too; `node`: a node kill's."""
        self.busy += busy
        if node is None:
            self.killed += 1
        else:
            self.nodes_killed.add(node)

    def counts(self) -> dict[str, Any]:
        return {"model_loads": self.loads, "busy_s": self.busy, "actor_kills": self.killed,
                "node_kills": len(self.nodes_killed), "all_ready": self.all_ready, "units": len(self.units),
                "extra_gpu_s_for_pairing": self.pairing}

    def unit_trace(self) -> list[tuple[str, str, float, float, float]]:
        """(actor, unit key, begun, ended, editing seconds) of every finished unit, in finishing order."""
        return list(self.trace)
