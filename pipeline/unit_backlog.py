"""A cap, counted in blocks, on what waits between the CPU stages and a GPU pool, so that a run's driver does not
grow with its records.

Ray Data backpressures by bytes (each operator's share of the object store). Before the GPU pool a unit is a block
of a few KB (the record's fields and its inputs' paths), and a task's return value that small is kept in the
memory of its owner, the driver, not in the object store. With a budget of gigabytes the cheap stages ran the whole
manifest ahead of the pool, and every waiting unit sat in the driver (bench/driver_memory.py on 8 logical CPUs: 10k
records, 323 MB; with this cap, 240 MB, as at 1k: 238 MB). This policy counts blocks instead: an operator upstream of an actor pool takes no new
input, and reads no more of its running tasks' outputs, while the blocks queued after it, up to and including the
pool's input queue, number BACKLOG_ROUNDS times the pool's slots (actors x units in flight each) or more. The pool
and what follows it are never held, so the queues drain and nothing waits on itself.

What it does not cap: results waiting after the pool for a CPU stage that Ray Data's resource budget starves. Ray
Data 2.60's allocator reserves each operator's minimum (one task's CPUs) upstream first and says downstream ones
"can wait for upstream ops to finish"; on a 4-CPU local cluster the read, expand, load and pool stages take all
of it, the finish stage runs only as CPUs happen to free, and results (small blocks: in the driver) pile up after
the pool (10k records: 422 MB and rising; on 8 CPUs flat, 240 MB). Holding the upstream stages back does not help
and deadlocks, whether by stalling their output reads or by refusing them new input (tried both): an idle
upstream operator keeps its reservation, so the finish stage still gets nothing. A cluster needs CPUs for every
stage's task at once (a GPU node has dozens); a real edit's results are images, in the object store.

It plugs into Ray Data 2.60's backpressure-policy setting (`cap_unit_backlog`); it reads the actor pool's private
`_actor_pool`, and a pool without it is left uncapped."""
from __future__ import annotations

from typing import Any

from ray.data import DataContext
from ray.data._internal.execution.backpressure_policy import (
    ENABLED_BACKPRESSURE_POLICIES,
    ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY,
    BackpressurePolicy,
)
from ray.data._internal.execution.operators.actor_pool_map_operator import ActorPoolMapOperator

BACKLOG_ROUNDS = 4   # rounds of the pool waiting in front of it: enough that it never starves


def pool_slots(pool: Any) -> int | None:
    """Units the pool runs at once at its largest (actors x in flight each), or None if Ray does not say."""
    actors = getattr(pool, "_actor_pool", None)
    try:
        return int(actors.max_size()) * int(actors.max_tasks_in_flight_per_actor())
    except (AttributeError, TypeError, ValueError):
        return None


class UnitBacklogCap(BackpressurePolicy):
    def __init__(self, data_context: DataContext, topology: Any, resource_manager: Any) -> None:
        super().__init__(data_context, topology, resource_manager)
        self._after: dict[Any, list[Any]] = {}   # an op upstream of a pool -> the ops after it, the pool last
        for op in topology:
            if isinstance(op, ActorPoolMapOperator) and pool_slots(op):
                self._walk(op, [op])

    def _walk(self, op: Any, after: list[Any]) -> None:
        for up in op.input_dependencies:
            if up not in self._after:
                self._after[up] = after
                self._walk(up, [up, *after])

    def queued(self, op: Any) -> tuple[int, int] | None:
        """(blocks queued after `op` up to the pool's input, the cap), or None for an op no pool follows."""
        after = self._after.get(op)
        if after is None:
            return None
        state = self._topology
        blocks = state[op].total_enqueued_output_blocks()
        for o in after:
            # an op's input queue is its upstream's output queue (one object in Ray Data's OpState): counted there
            blocks += state[o].total_enqueued_input_blocks() - sum(q.num_blocks for q in state[o].input_queues)
            if o is not after[-1]:
                blocks += state[o].total_enqueued_output_blocks()
        return blocks, BACKLOG_ROUNDS * pool_slots(after[-1])

    def _over(self, op: Any) -> bool:
        counts = self.queued(op)
        return counts is not None and counts[0] >= counts[1]

    def can_add_input(self, op: Any) -> bool:
        return not self._over(op)

    def max_task_output_bytes_to_read(self, op: Any) -> int | None:
        return 0 if self._over(op) else None


def cap_unit_backlog(context: DataContext | None = None) -> None:
    """Add `UnitBacklogCap` to `context`'s backpressure policies (the current context by default), once."""
    context = context or DataContext.get_current()
    policies = list(context.get_config(ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY, ENABLED_BACKPRESSURE_POLICIES))
    if UnitBacklogCap not in policies:
        context.set_config(ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY, [*policies, UnitBacklogCap])
