"""The unit of work of an ablation: one record x its configurations of one model entry (all of them, or, for
the records a run splits, one part of them: see "Split units" below).

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
another configuration.

Split units (`split_configs`, planned by `unit_plan`): when the run has few records per actor, the last records
of the input are split into several units each, so the run's tail is made of short units. Whole (size, seed)
groups go to different units first (free: each group has its own `full`); splitting a group puts its `full`
in its first part, which runs it first and writes its picture at once; every other part reads that picture
back as its reference and pairs its timings with the latest `full` of the same configuration on its own actor
(`units.pairing: read_back`, `reference_readback`: the path a resumed unit takes too), or re-runs `full` on
its own actor (`rerun`, or when the picture is not written within one `full` edit's time): one extra `full`
edit per extra part, charged to the rows as `pairing_rerun_s`. A `budget_from` configuration stays in its
source's part."""
from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import pyarrow as pa

from .records import FROM_END, RECORD_FIELDS, RECORD_SCHEMA
from .resume import DoneIndex

if TYPE_CHECKING:
    from .configuration import Configuration

UNIT_SCHEMA = (RECORD_SCHEMA.append(pa.field("config_ids", pa.list_(pa.string())))
               .append(pa.field("parts", pa.int32())))   # units the record's configurations went into


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
    """The configurations a unit needs: the ones it emits rows for, plus each group's `full` (the reference
    and timing partner; when the unit does not emit it, read back or re-run: `unit_stage`) and each budget source
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


# config id -> (its group, whether it is the group's reference, its budget source): what splitting needs to know
# of each configuration, small enough to travel with every expansion task
Layout = Mapping[str, tuple[str, bool, "str | None"]]


def unit_layout(configs: Iterable[Configuration]) -> dict[str, tuple[str, bool, str | None]]:
    return {c.config_id: (group_key(c), c.is_reference, c.budget_source) for c in configs}


def group_parts(sizes: Sequence[int], parts: int) -> list[int]:
    """Units per group when a record goes into `parts` units: 1 each when there are at least as many groups
    (whole groups are merged, which costs no pairing), else `parts` shared in proportion to the groups' sizes
    (blocks that may be split apart; largest remainders), at least 1 and at most a group's size."""
    if parts <= len(sizes):
        return [1] * len(sizes)
    total = sum(sizes) or 1
    exact = [parts * s / total for s in sizes]
    out = [max(1, min(s, int(e))) for s, e in zip(sizes, exact)]
    for i in sorted(range(len(sizes)), key=lambda i: int(exact[i]) - exact[i]):   # largest remainders first
        if sum(out) >= parts:
            break
        if out[i] < sizes[i]:
            out[i] += 1
    return out


def _deal(blocks: list[list[str]], bins: int) -> list[list[str]]:
    """Blocks into `bins` bins of near-equal edit counts (largest first into the lightest; grid order kept)."""
    out: list[list[str]] = [[] for _ in range(bins)]
    for block in sorted(blocks, key=len, reverse=True):
        min(out, key=len).extend(block)
    return [b for b in out if b]


def group_blocks(todo: Sequence[str], layout: Layout) -> dict[str, tuple[list[str], list[list[str]]]]:
    """group -> (its reference if to run, its other configurations as blocks that stay together: a
    `budget_from` configuration with its source when the source is to run too)."""
    groups: dict[str, tuple[list[str], list[list[str]]]] = {}
    block_of: dict[str, list[str]] = {}
    wanted = set(todo)
    for cid in sorted(todo, key=lambda c: layout[c][2] is not None):   # sources before their dependents
        group, is_ref, source = layout[cid]
        ref, blocks = groups.setdefault(group, ([], []))
        if is_ref:
            ref.append(cid)
        elif source in wanted and source in block_of:
            block_of[source].append(cid)
        else:
            block_of[cid] = [cid]
            blocks.append(block_of[cid])
    return groups


def split_configs(todo: Sequence[str], layout: Layout, parts: int) -> list[list[str]]:
    """A record's configurations still to run, in at most `parts` units (see the module docstring)."""
    if parts <= 1 or len(todo) <= 1:
        return [list(todo)]
    groups, order = group_blocks(todo, layout), {cid: i for i, cid in enumerate(todo)}
    sizes = [max(len(blocks), 1) for _, blocks in groups.values()]
    if parts <= len(groups):   # whole groups into `parts` units
        whole = [ref + [c for b in blocks for c in b] for ref, blocks in groups.values()]
        return [sorted(u, key=order.__getitem__) for u in _deal(whole, parts)]
    out = []
    for (ref, blocks), n in zip(groups.values(), group_parts(sizes, parts)):
        dealt = _deal(blocks, n) or [[]]
        dealt[0] = ref + dealt[0]   # the reference is written by the group's first part only
        out += [sorted(u, key=order.__getitem__) for u in dealt if u]
    return out


def expand_units(batch: pa.Table, config_ids: Sequence[str], done: Mapping[str, frozenset[str]] | DoneIndex,
                 layout: Layout | None = None, parts: int = 1, tail: int | None = None) -> pa.Table:
    """Records -> units: each record with the ids of its configurations that still lack an `ok` row (`done`:
    record id -> config ids with one, or the run's `DoneIndex`, looked up for this batch's records only);
    records with nothing left to do are dropped. The records among the
    last `tail` of their input file (the stream's `from_end` column; None: every record) are split into up to
    `parts` units (`split_configs`, which needs the configurations' `layout`)."""
    split = parts > 1 and layout is not None
    from_end = batch.column(FROM_END).to_pylist() if split and FROM_END in batch.column_names else None
    if isinstance(done, DoneIndex):
        done = done.lookup([str(r) for r in batch.column("id").to_pylist()])
    rows = []
    for i, rec in enumerate(batch.select(list(RECORD_FIELDS)).to_pylist()):
        finished = done.get(str(rec["id"]), frozenset())
        todo = [cid for cid in config_ids if cid not in finished]
        if not todo:
            continue
        in_tail = split and (tail is None or (from_end is not None and from_end[i] < tail))
        units = split_configs(todo, layout, parts) if in_tail else [todo]
        rows += [{**rec, "config_ids": part, "parts": len(units)} for part in units]
    return pa.Table.from_pylist(rows, schema=UNIT_SCHEMA)
