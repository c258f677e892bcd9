"""Ray Data keeps, on the driver, one stats record per block each operator outputs (`MapOperator`'s
`_output_blocks_stats`, for `Dataset.stats()`), until the dataset's execution ends. A run streams a block per
unit through every stage, so a million-unit run would hold millions of them in the driver. This execution
callback keeps the last few per operator as the run goes: the run never reads `Dataset.stats()`, and the
executor's own progress and metrics do not come from these lists.

It reads a private attribute of Ray Data 2.60's operators; a Ray without it makes the callback do nothing."""
from __future__ import annotations

from typing import Any

from ray.data import DataContext
from ray.data._internal.execution.execution_callback import ExecutionCallback

KEEP = 100   # per operator: what the end-of-run summary line is computed from


class DropBlockStats(ExecutionCallback):
    def on_execution_step(self, executor: Any) -> None:
        for op in getattr(executor, "_topology", None) or ():
            stats = getattr(op, "_output_blocks_stats", None)
            if isinstance(stats, list) and len(stats) > 2 * KEEP:
                del stats[:-KEEP]


def drop_block_stats(context: DataContext | None = None) -> None:
    """Register `DropBlockStats` on `context` (the current one by default), once."""
    context = context or DataContext.get_current()
    if DropBlockStats not in context.custom_execution_callback_classes:
        context.custom_execution_callback_classes.append(DropBlockStats)
