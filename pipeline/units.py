"""The unit of work of an ablation: one record x every configuration of one model entry.

Why this unit (measured with `dropedit simulate`, see README "Scaling"):
- the record's `full` edit runs on the same actor as its variants, a few seconds apart: fidelity to `full` is
  computed in memory (no PNG written and read back) and every variant's speedup is a *paired* ratio, timed on
  the same GPU in the same state;
- matched budgets (`budget_from`) find their source's kept counts in the same unit, so no stage barrier;
- 700 records x 20 configurations on 32 GPUs is 700 units of ~20 edits: ~22 units per GPU, so the tail (the
  last unit started) costs at most one unit's time, ~5 % of the makespan there. Smaller units (record x
  configuration) balance better but lose the pairing and the in-memory reference; larger ones (several
  records) lengthen the tail.

Within a unit, each (size, seed) group runs its independent configurations in an order rotated per record
(so no configuration is always first, when caches are cold, or last), then the ones whose budget comes from
another configuration."""
from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import pyarrow as pa

from .records import RECORD_FIELDS, RECORD_SCHEMA

if TYPE_CHECKING:
    from .configuration import Configuration

UNIT_SCHEMA = RECORD_SCHEMA.append(pa.field("config_ids", pa.list_(pa.string())))


def group_key(config: Configuration) -> str:
    """Configurations that share a `full` reference (same model, size, seed, sampling) form a group."""
    return str(config.full_config_id or config.config_id)


def run_order(configs: Sequence[Configuration], record_id: str) -> list[Configuration]:
    """The order one unit runs `configs` in: per group, independent configurations rotated by a stable hash of
    the record id, then the budget-dependent ones (after their sources, which are independent)."""
    groups: dict[str, list[Configuration]] = {}
    for conf in configs:
        groups.setdefault(group_key(conf), []).append(conf)
    shift = zlib.crc32(str(record_id).encode())
    out: list[Configuration] = []
    for members in groups.values():
        free = [c for c in members if not c.budget_source]
        dependent = [c for c in members if c.budget_source]
        k = shift % len(free) if free else 0
        out += free[k:] + free[:k] + dependent
    return out


def needed_configs(emit: Iterable[str], configs: Mapping[str, Configuration],
                   stored_budget: set[str]) -> list[str]:
    """The configurations a unit runs: the ones it emits rows for, plus each group's `full` (the in-memory
    reference and timing partner; re-run, not emitted, when a resumed unit lacks it) and each budget source
    whose kept counts are not already stored (`stored_budget`: source config ids known for this record)."""
    run = dict.fromkeys(emit)
    for cid in list(run):
        conf = configs[cid]
        full = conf.full_config_id
        if full and full != cid:
            run.setdefault(full)
        source = conf.budget_source
        if source and source not in stored_budget:
            run.setdefault(source)
    return list(run)


def expand_units(batch: pa.Table, config_ids: Sequence[str], done: Mapping[str, frozenset[str]]) -> pa.Table:
    """Records -> units: each record with the ids of its configurations that still lack an `ok` row (`done`:
    record id -> config ids with one). Records with nothing left to do are dropped."""
    rows = []
    for rec in batch.select(list(RECORD_FIELDS)).to_pylist():
        finished = done.get(str(rec["id"]), frozenset())
        todo = [cid for cid in config_ids if cid not in finished]
        if todo:
            rows.append({**rec, "config_ids": todo})
    return pa.Table.from_pylist(rows, schema=UNIT_SCHEMA)
