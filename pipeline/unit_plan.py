"""How finely one model entry's work is cut into units: which records are split, into how many units each, and
what the pairing costs. Planned on the driver from the run's size and the pool, before the graph starts.

Why split at all: the tail of a run (actors idle while the last units finish) is about half a unit long, so its
share of the makespan is ~1 / (2 x units per actor): ~2.5 % at 20 units per actor, ~9 % at PIE-Bench's 700
records on 128 actors (5.5 each). Why only the last records: the tail is made of the last units started, so
only they need to be short. Records stream from the input in order (`record_stream`), so the last records of
the input are split into `parts` units each; the rest stay whole (one unit per record, its `full` and
variants on one actor). Splitting a (size, seed) group costs one extra `full` edit per extra part when the
parts re-run it (`units.pairing: rerun`, see `units`), so the rule keeps that under a budget. When they read it
back (`read_back`, the default), a part re-runs `full` only on an actor that has not timed one yet: the parts
among the pool's first round of units (`_readback_reruns`); a run with at least one whole record per actor
before its split tail plans none, and the split goes to the 20-units-per-actor target (the waits for a
reference and the re-runs it falls back to are measured: `extra_gpu_s_for_pairing`).

The automatic rule (`units: {split: auto}`), for A = actors.max_size x actors.concurrency (GPUs), R records, a record's configurations of
this entry costing W (cost model, `edit_weight`), its group references `full` costing F each:
- A = 1, or R >= 20 A (20 units per actor already): no split;
- else the last m = min(R, A) records (one round of the pool; per input file, ceil(m / files)) are split into
  k parts, k the largest in [2, ceil(20 A / R)] with extra pairing work m * extra(k) <= 5 % of R * W (read
  back: only the first round's parts, see above),
  extra(k) = sum over groups of (parts of the group - 1) * F (`units.group_parts`); the tail is then made of
  units k times smaller, as in a run with (R / A) * k units per actor. No k fits: no split.
E.g. PIE-Bench (700 records) x 20 configurations (`full` + 19 `random` keep ratios 0.1-0.95, FLUX.1-Kontext
1024², where `full` is 6.8 % of a record's FLOPs), reading `full` back: 128 actors -> the last 128 records in
4 units, 256 actors -> the last 256 in 8, no re-run planned; 1,024 actors -> all 700 in 2 (512 first-round
re-runs, 4.95 %). Re-running instead: 128 -> 4 units (3.7 % extra), 256 -> 3 (4.9 %), 1,024 -> no split.
32 actors (22 records each) -> no split."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from .config import UnitsConfig
from .configuration import Configuration
from .units import group_blocks, group_parts, unit_layout

TARGET_UNITS_PER_ACTOR = 20   # the tail's share ~1 / (2 x 20) = 2.5 % of the makespan
PAIRING_BUDGET = 0.05         # extra `full` edits for pairing: at most this share of the entry's GPU work
KEEP_PARAMETERS = ("ratio", "keep")   # policy parameters that fix a configuration's share of source tokens


@dataclass(frozen=True)
class UnitPlan:
    """One model entry's units. `tail` counts records from the end of each input file (None: all records)."""

    parts: int = 1                     # units a split record's configurations go into (1: no split)
    tail: int | None = 0               # records split per input file, from its end
    records: int | None = None         # the input's records, when the rule needed them
    units: int | None = None           # units of a fresh run, when the records are known
    pairing_edits: int | None = None   # extra `full` edits the split costs a fresh run
    pairing_share: float | None = None   # their share of the entry's GPU work (cost model estimate)
    why: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def edit_weight(config: Configuration) -> float:
    """The cost model's FLOPs of one edit of `config` (on its model's real architecture): at the source-token
    share its parameters fix (`ratio`, `keep`), else at full context. Adaptive policies (TokenDrop, SpotEdit,
    ...) and caches cost less than that, so with them the estimated pairing share is a lower bound. 1.0 for a
    model the cost model does not know (the share is then a share of edits)."""
    from costs import edit_cost   # the registry's data only: no torch, no diffusers

    params = config.policy_params
    keep = next((float(params[k]) for k in KEEP_PARAMETERS if isinstance(params.get(k), (int, float))), 1.0)
    try:
        return edit_cost(config.model_name, config.height, config.width, config.steps or 1,
                         config.guidance_scale, keep=1.0 if config.policy == "full" else keep).flops
    except (ValueError, KeyError):
        return 1.0


def _split_cost(configs: Sequence[Configuration], parts: int, weigh: Callable[[Configuration], float]
                ) -> tuple[int, float, int]:
    """(extra `full` edits, their weight, units) of one record split into `parts` units, nothing done yet."""
    by_id = {c.config_id: c for c in configs}
    groups = group_blocks(list(by_id), unit_layout(configs))
    counts = group_parts([max(len(blocks), 1) for _, blocks in groups.values()], parts)
    if parts <= len(groups):
        return 0, 0.0, min(parts, len(groups))
    extra, weight = 0, 0.0
    for (ref, _), n in zip(groups.values(), counts):
        if ref:
            extra += n - 1
            weight += (n - 1) * weigh(by_id[ref[0]])
    return extra, weight, sum(counts)


def _fixed(configs: Sequence[Configuration], setting: UnitsConfig, actors: int, files: int,
           records: int | None) -> UnitPlan:
    """A plan the config fixes (`split: N`, or `none`)."""
    parts = 1 if setting.split == "none" else int(setting.split)
    if parts == 1:
        return UnitPlan(why="units.split: none")
    m = {"all": None, "auto": actors}.get(setting.records, setting.records)
    tail = None if m is None else math.ceil(m / max(files, 1))
    return UnitPlan(parts=parts, tail=tail, records=records, why=f"units.split: {parts}")


def plan_units(configs: Sequence[Configuration], setting: UnitsConfig, actors: int, records: int | None,
               files: int = 1, weigh: Callable[[Configuration], float] = edit_weight) -> UnitPlan:
    """The plan of one model entry's configurations (the rule: module docstring). `records` may be None unless
    the rule is automatic and `actors` > 1 (`needs_records`)."""
    if setting.split != "auto":
        return _fixed(configs, setting, actors, files, records)
    if actors <= 1:
        return UnitPlan(why="one actor: no tail to shorten")
    if records is None:
        raise ValueError("the automatic unit split needs the input's record count")
    if records >= TARGET_UNITS_PER_ACTOR * actors:
        return UnitPlan(records=records, units=records, pairing_edits=0, pairing_share=0.0,
                        why=f"{records / actors:.1f} records per actor: no split")
    m = min(records, actors) if setting.records == "auto" else (
        records if setting.records == "all" else min(records, int(setting.records)))
    total = records * sum(weigh(c) for c in configs)
    best, read_back = None, setting.pairing == "read_back"
    for k in range(2, math.ceil(TARGET_UNITS_PER_ACTOR * actors / records) + 1):
        extra, weight, units = _split_cost(configs, k, weigh)
        reruns = _readback_reruns(actors, records, m, units, files) if read_back else m * (units - 1)
        scale = reruns / (units - 1) if units > 1 else 0.0   # records' worth of re-runs
        if scale * weight > PAIRING_BUDGET * total or (best is not None and units <= best[2]):
            continue   # over budget, or no more units than a smaller k gives
        best = (scale * extra, scale * weight, units, k)
    if best is None:
        return UnitPlan(records=records, units=records, pairing_edits=0, pairing_share=0.0,
                        why=f"no split keeps pairing under {PAIRING_BUDGET:.0%} of the work")
    extra, weight, units, k = best
    return UnitPlan(parts=k, tail=None if m >= records and files == 1 else math.ceil(m / max(files, 1)),
                    records=records, units=records - m + m * units, pairing_edits=round(extra),
                    pairing_share=round(weight / total, 4),
                    why=f"{records / actors:.1f} records per actor: the last {m} split in {units}"
                        + (" (pairing: read back)" if read_back else ""))


def _readback_reruns(actors: int, records: int, split: int, units: int, files: int = 1) -> float:
    """Parts expected to re-run `full` when parts read it back: those among the pool's first round (one unit
    per actor, in stream order: whole records first) that find no `full` timed on their actor yet, (units - 1)
    of every `units` split ones. Later parts find one (every actor has run a unit with `full` by then). With
    several input files the split tails are inside the stream: a whole first round is counted."""
    whole = records - split if files <= 1 else 0
    first_round = max(0, min(actors - whole, split * units))
    return first_round * (units - 1) / units


def needs_records(setting: UnitsConfig, actors: int) -> bool:
    """Whether `plan_units` needs the input's record count (counted on the workers: one pass over the input)."""
    return setting.split == "auto" and actors > 1
