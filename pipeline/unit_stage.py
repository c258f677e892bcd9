"""The GPU stage's frame: one unit (a record x its configurations of one model) in, its edits out.

`UnitActor.__call__` runs each unit's configurations back to back in `units.run_order` (a split record's
part that emits `full` runs it first), pairs every edit with its group's `full` edit (timed on this actor:
`speedup_vs_full`; a `full` the unit needs but does not emit is read back from storage after the unit's
edits, `reference_readback`, or re-run and charged to `pairing_rerun_s`), lets the subclass score what needs
a model (LPIPS, CLIP, DINO, the judge), and returns the unit with its edits pickled: pixels and partial rows.
PNG encoding, writes and pixel metrics happen in the CPU stage after (`finish_stage`), but for a split
record's `full`, which its part writes at once for the other parts to read.

Subclasses implement `edit(config, inputs, unit, budget)` (`edit_stage.EditActor`: the model;
`simulation.cluster.SimulatedEditActor`: a synthetic stand-in) and may override `score`."""
from __future__ import annotations

import os
import pickle
import socket
import statistics
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from .config import BUDGET_FROM
from .configuration import Configuration
from . import storage as st
from .records import base_row, error_row, utcnow
from .reference_readback import image_uri, publish, read_back
from .units import needed_configs, run_order

EDITS_FIELD = pa.field("edits", pa.binary())
TIMINGS_KEPT = 5   # `full` loop times an actor keeps per pairing key; a read-back pairs with their median


@dataclass
class UnitEdit:
    """One configuration's edit inside a unit: its output row so far, pixels, and whether it is emitted."""

    config: Configuration
    row: dict[str, Any]
    emit: bool
    image: np.ndarray | None = None          # the edit as the model made it, H x W x 3 uint8
    keep_mean: np.ndarray | None = None      # step-averaged keep (or active) mask on the latent grid
    kept_per_step: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)   # for `score` (e.g. the judge's inputs)

    @property
    def ok(self) -> bool:
        return self.row.get("status") == "ok"


class UnitActor:
    """Class-based `map_batches` UDF (one instance per actor: the model is loaded once).

    `configs` (config_id -> `Configuration.to_row()`) crosses Ray as plain rows; the actor rebuilds them."""

    def __init__(self, configs: Mapping[str, Mapping[str, Any]], run_id: str,
                 stored_budgets: dict[tuple[str, str], list[int]] | None = None, output: str | None = None,
                 storage: Mapping[str, Any] | None = None, pairing: str = "read_back") -> None:
        self.configs = {cid: Configuration.from_row(row) for cid, row in configs.items()}
        self.run_id = run_id
        self.stored_budgets = stored_budgets or {}
        self.actor = f"{socket.gethostname()}:{os.getpid()}"
        self.device = "cpu"
        # `full` references read back from `output` (`reference_readback`); None: always re-run
        self.readback_output = output if pairing == "read_back" else None
        self.readback_storage = st.StorageConfig.from_mapping(storage)
        # this actor's last `full` loop seconds per (configuration, reference images): the pairing partners
        self.full_times: dict[tuple[str, int], deque[float]] = {}

    # -- subclass API
    def edit(self, config: Configuration, inputs: dict[str, Any], unit: Mapping[str, Any],
             budget: list[int] | None) -> UnitEdit:
        raise TypeError(f"{type(self).__name__} does not define edit()")

    def score(self, edits: list[UnitEdit], inputs: dict[str, Any], unit: Mapping[str, Any]) -> None:
        """Model-based metrics into the rows of the emitted ok edits; the others (e.g. a re-run `full`) are
        there as references. Default: none."""

    # -- the frame
    def __call__(self, batch: pa.Table) -> pa.Table:
        units = batch.drop_columns(["inputs"]).to_pylist()
        payloads = [self._unit_payload(unit, blob) for unit, blob in zip(units, batch.column("inputs").to_pylist())]
        return batch.append_column(EDITS_FIELD, pa.array(payloads, pa.binary()))

    def _unit_payload(self, unit: dict[str, Any], blob: bytes | None) -> bytes:
        if blob is None:   # the CPU stage could not load the record: one error row per configuration
            now = utcnow()
            edits = [UnitEdit(self.configs[c], error_row(unit, self.configs[c].to_row(), unit["load_error"],
                                                         run_id=self.run_id, device=self.device, started_at=now),
                              True)
                     for c in unit["config_ids"]]
        else:
            edits = self.run_unit(unit, pickle.loads(blob))
        return pickle.dumps(edits, protocol=pickle.HIGHEST_PROTOCOL)   # non-emitted ones: references (full)

    # -- hooks for a clock that is not the wall's (the synthetic model's scaled seconds)
    def to_wall(self, seconds: float) -> float:
        """Wall seconds of `seconds` as this actor's rows count them."""
        return seconds

    def waited(self, wall_s: float) -> float:
        """A wall wait for a reference, in the rows' seconds (a subclass may book it as pairing time)."""
        return wall_s

    def run_unit(self, unit: Mapping[str, Any], inputs: dict[str, Any]) -> list[UnitEdit]:
        """Every configuration the unit needs, in run order, then the references it reads back (or re-runs);
        pairs and scores the emitted ones."""
        rid, emit = str(unit["id"]), set(unit["config_ids"])
        stored = {src for (src, r) in self.stored_budgets if r == rid}
        needed = needed_configs(unit["config_ids"], self.configs, stored)
        borrow = self._borrowable(needed, emit, stored)
        order = run_order([self.configs[c] for c in needed if c not in borrow], rid)
        if split_part(unit):   # the part that writes `full` runs it first, for the other parts to read back
            order = [c for c in order if c.is_reference] + [c for c in order if not c.is_reference]
        done: dict[str, UnitEdit] = {}
        for config in [*order, *(self.configs[c] for c in borrow)]:
            if config.config_id in borrow:
                edit = self._borrow(config, inputs, unit, done)
            else:
                edit = self._attempt(config, inputs, unit, done)
                edit.emit = config.config_id in emit
            edit.row["run_position"] = len(done)
            done[config.config_id] = edit
            self._timed(edit, unit, inputs)
        edits = list(done.values())
        pair_with_full(edits)
        charge_reruns(edits)
        self.score(edits, inputs, unit)
        return edits

    def _borrowable(self, needed: list[str], emit: set[str], stored: set[str]) -> list[str]:
        """The group references this unit needs but does not emit, to read back rather than re-run (none of
        them a budget source still to run here: a budget needs the edit's own kept counts)."""
        if self.readback_output is None:
            return []
        sources = {self.configs[c].budget_source for c in needed} - stored
        return [c for c in needed if c not in emit and self.configs[c].is_reference and c not in sources]

    def _timed(self, edit: UnitEdit, unit: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
        """Keep an ok `full` edit's loop seconds (a pairing partner for later units on this actor); publish
        it when it is a split record's reference."""
        if not edit.config.is_reference or not edit.ok or edit.extra.get("borrowed"):
            return
        seconds = float(edit.row.get("loop_s") or edit.row.get("runtime_s") or 0.0)
        self.full_times.setdefault(timing_key(edit.config, inputs), deque(maxlen=TIMINGS_KEPT)).append(seconds)
        if edit.emit and split_part(unit) and self.readback_output is not None:
            publish(edit, self.readback_output, self.readback_storage)

    def _borrow(self, config: Configuration, inputs: dict[str, Any], unit: Mapping[str, Any],
                done: Mapping[str, UnitEdit]) -> UnitEdit:
        """The record's `full` read back and paired with the median of this actor's last `full` loop times
        of the same configuration and reference count (waiting, in a split record, at most that long for it
        to be written); else re-run."""
        kept, wait_s = self.full_times.get(timing_key(config, inputs)), 0.0
        timing = float(statistics.median(kept)) if kept else None
        if timing:
            uri = image_uri(self.readback_output, "images", config.config_id, str(unit["id"]))
            image, wall = read_back(uri, self.readback_storage, self.to_wall(timing) if split_part(unit) else 0.0)
            wait_s = self.waited(wall) if wall > 0 else 0.0
            if image is not None:
                row = self.ok_row(config, unit, utcnow())
                row.update(loop_s=timing, runtime_s=timing, actor=self.actor, device=self.device)
                return UnitEdit(config, row, False, image=image, extra={"borrowed": True, "wait_s": wait_s})
        edit = self._attempt(config, inputs, unit, done)
        edit.emit = False
        edit.extra["wait_s"] = wait_s
        return edit

    def _attempt(self, config: Configuration, inputs: dict[str, Any], unit: Mapping[str, Any],
                 done: Mapping[str, UnitEdit]) -> UnitEdit:
        started = utcnow()
        try:
            edit = self.edit(config, inputs, unit, self._budget(config, str(unit["id"]), done))
        except Exception as err:   # noqa: BLE001 - one failed edit is that row's error, not the job's
            edit = UnitEdit(config, error_row(unit, config.to_row(), err, run_id=self.run_id, device=self.device,
                                              started_at=started), True)
        edit.row.update(actor=self.actor, device=self.device)
        return edit

    def _budget(self, config: Configuration, record_id: str, done: Mapping[str, UnitEdit]) -> list[int] | None:
        source = config.budget_source
        if source is None:
            return None
        if source in done and done[source].ok:
            return done[source].kept_per_step
        if (source, record_id) in self.stored_budgets:
            return self.stored_budgets[(source, record_id)]
        raise ValueError(f"no ok row of the configuration {config.policy_params[BUDGET_FROM]!r} for this "
                         "record: its per-step budget is unknown")

    def ok_row(self, config: Configuration, unit: Mapping[str, Any], started: datetime) -> dict[str, Any]:
        """An ok row's identifying columns, for subclasses' `edit`."""
        row = base_row(unit, config.to_row(), self.run_id)
        row.update(status="ok", started_at=started, finished_at=utcnow())
        return row


def reference_of(edit: UnitEdit, edits: list[UnitEdit]) -> UnitEdit | None:
    """The unit's edit of `edit`'s group reference (the uncached `full`); None for the reference itself."""
    if edit.config.is_reference:
        return None
    return next((e for e in edits if e.config.config_id == edit.config.full_config_id), None)


def charge_reruns(edits: list[UnitEdit]) -> None:
    """A group's `full` run here only as the pairing partner and reference (not emitted: another unit of a split
    record writes it, or it is already written) is extra GPU time: its `runtime_s` goes into `pairing_rerun_s`
    of the first emitted edit it pairs with, so that summing the column counts each re-run once. A reference
    read back charges the seconds waited for it (`pairing_wait_s`, 0.0 when it was there) the same way."""
    for ref in edits:
        if ref.emit or not ref.config.is_reference:
            continue
        partner = next((e for e in edits if e.emit and e.config.full_config_id == ref.config.config_id), None)
        if partner is None:
            continue
        if not ref.extra.get("borrowed"):
            partner.row["pairing_rerun_s"] = ref.row.get("runtime_s")
        if ref.extra.get("borrowed") or ref.extra.get("wait_s"):
            partner.row["pairing_wait_s"] = ref.extra.get("wait_s", 0.0)


def pair_with_full(edits: list[UnitEdit]) -> None:
    """`speedup_vs_full` = the group's `full` loop time / this edit's, both timed on this actor: in this unit
    (`speedup_paired_on` "unit"), or, for a reference read back, its configuration's latest `full` here ("actor")."""
    for e in edits:
        full = reference_of(e, edits)
        if full is None or not full.ok or not e.ok:
            continue
        ref, mine = full.row.get("loop_s") or full.row.get("runtime_s"), e.row.get("loop_s") or e.row.get("runtime_s")
        if ref and mine:
            e.row["speedup_vs_full"] = float(ref) / float(mine)
            e.row["speedup_paired_on"] = "actor" if full.extra.get("borrowed") else "unit"


def split_part(unit: Mapping[str, Any]) -> bool:
    """Whether the unit is one of several parts of its record (`units.split_configs`)."""
    return int(unit.get("parts") or 1) > 1


def timing_key(config: Configuration, inputs: Mapping[str, Any]) -> tuple[str, int]:
    """What fixes a `full` edit's loop time besides its configuration: the record's reference images, which
    add context tokens. (Qwen-Image-Edit's text length varies with the prompt too: a few % of its tokens.)"""
    return config.config_id, len(inputs.get("references") or ())
