"""The unit of work (a record x its configurations of one model, or a part of them): run order, what a resumed
unit re-runs, the expansion of records into units, the split of a tail record, and the in-unit pairing with
`full` (and what a re-run `full` is charged)."""
import pyarrow as pa

import dataclasses

from pipeline.config import expand_grid, parse_config
from pipeline.records import FROM_END, RECORD_SCHEMA, new_record
from pipeline.unit_stage import UnitEdit, charge_reruns, pair_with_full
from pipeline.units import (UNIT_SCHEMA, expand_units, group_parts, needed_configs, run_order, split_configs,
                            unit_layout)

TOKENDROP = {"name": "tokendrop", "omega": 0.0, "full_steps": 1}
REFERENCE = "tokendrop omega=0.0 full_steps=1"


def _grid(**extra):
    raw = {"input": "m.jsonl", "output": "/tmp/out", "models": [{"name": "tiny-flux-kontext"}],
           "policies": [TOKENDROP, {"name": "random", "ratio": [0.3, 0.6]},
                        {"name": "random", "budget_from": REFERENCE}],
           "resolutions": [64], "steps": 3, **extra}
    return expand_grid(parse_config(raw))


def test_run_order_rotates_per_record_and_keeps_dependents_after_their_source():
    configs = _grid()
    free = [c.label for c in configs if not c.budget_source]
    firsts = set()
    for i in range(40):
        order = [c.label for c in run_order(configs, f"record-{i}")]
        assert order == [c.label for c in run_order(configs, f"record-{i}")]   # stable per record
        assert sorted(order[:len(free)]) == sorted(free) and order[-1] == f"random budget_from={REFERENCE}"
        head, k = order[:len(free)], order.index(free[0])
        assert head[k:] + head[:k] == free   # a rotation of the grid order
        firsts.add(order[0])
    assert firsts == set(free)   # every configuration is sometimes first (cold caches), none always


def test_groups_of_sizes_each_run_their_own_full():
    configs = _grid(resolutions=[64, 128])
    order = run_order(configs, "r")
    halves = [order[:len(order) // 2], order[len(order) // 2:]]
    assert [{c.height for c in h} for h in halves] == [{64}, {128}]


def test_a_resumed_unit_reruns_full_and_missing_budget_sources_without_emitting_them():
    configs = {c.config_id: c for c in _grid()}
    by_label = {c.label: c.config_id for c in configs.values()}
    dependent = by_label[f"random budget_from={REFERENCE}"]
    run = needed_configs([dependent], configs, stored_budget=set())
    assert set(run) == {dependent, by_label["full"], by_label[REFERENCE]}
    run = needed_configs([dependent], configs, stored_budget={by_label[REFERENCE]})
    assert set(run) == {dependent, by_label["full"]}             # the stored counts serve
    assert needed_configs([by_label["full"]], configs, set()) == [by_label["full"]]


def test_records_expand_into_units_of_their_missing_configurations():
    records = pa.Table.from_pylist([new_record(id="a", image="x.png", instruction="i"),
                                    new_record(id="b", image="y.png", instruction="i")], schema=RECORD_SCHEMA)
    units = expand_units(records, ["c1", "c2"], {"a": frozenset({"c1"}), "b": frozenset({"c1", "c2"})})
    assert units.schema == UNIT_SCHEMA
    assert units.to_pylist()[0]["id"] == "a" and units["config_ids"].to_pylist() == [["c2"]]   # b is done


def test_pairing_uses_the_same_units_full_loop_time():
    conf = _grid()[0]
    full = dataclasses.replace(conf, config_id="f", full_config_id="f", policy="full")
    other = dataclasses.replace(conf, config_id="o", full_config_id="f", policy="random")
    edits = [UnitEdit(full, {"status": "ok", "loop_s": 3.0}, True),
             UnitEdit(other, {"status": "ok", "loop_s": 1.5}, True),
             UnitEdit(dataclasses.replace(other, config_id="e"), {"status": "error"}, True)]
    pair_with_full(edits)
    assert edits[1].row["speedup_vs_full"] == 2.0
    assert "speedup_vs_full" not in edits[0].row and "speedup_vs_full" not in edits[2].row


def _ids(configs, labels):
    by_label = {c.label: c.config_id for c in configs}
    return [by_label[label] for label in labels]


def test_a_split_record_runs_every_configuration_once_with_full_first_and_budgets_beside_their_source():
    configs = _grid()   # full, tokendrop, random x2, random budget_from tokendrop: one (size, seed) group
    layout, todo = unit_layout(configs), [c.config_id for c in configs]
    full, source, dependent = _ids(configs, ["full", REFERENCE, f"random budget_from={REFERENCE}"])
    for parts in (2, 3, 4, 9):
        units = split_configs(todo, layout, parts)
        assert sorted(c for u in units for c in u) == sorted(todo)          # each configuration once
        assert len(units) == min(parts, 3) and full in units[0]             # 3 blocks: full goes with the first
        assert any({source, dependent} <= set(u) for u in units)           # the budget stays with its source
    assert split_configs(todo, layout, 1) == [todo]


def test_groups_are_split_apart_first_which_costs_no_pairing():
    configs = _grid(resolutions=[64, 128])
    layout, todo = unit_layout(configs), [c.config_id for c in configs]
    units = split_configs(todo, layout, 2)
    assert [{c.height for c in configs if c.config_id in u} for u in units] == [{64}, {128}]
    assert all(sum(1 for c in configs if c.config_id in u and c.is_reference) == 1 for u in units)
    assert group_parts([3, 3], 2) == [1, 1] and group_parts([3, 3], 4) == [2, 2] and group_parts([5, 1], 4) == [3, 1]


def test_a_resumed_split_record_splits_only_what_is_missing_and_each_part_reruns_full():
    configs = {c.config_id: c for c in _grid()}
    full = next(c.config_id for c in configs.values() if c.is_reference)
    todo = [c for c in configs if c != full]
    units = split_configs(todo, unit_layout(configs.values()), 3)
    assert sorted(c for u in units for c in u) == sorted(todo) and len(units) == 3
    assert all(full in needed_configs(u, configs, stored_budget=set()) for u in units)   # re-run, not emitted


def test_only_the_records_in_the_tail_are_split():
    configs = _grid()
    ids = [c.config_id for c in configs]
    records = pa.Table.from_pylist([new_record(id=f"r{i}", image="x.png", instruction="i") for i in range(4)],
                                   schema=RECORD_SCHEMA).append_column(FROM_END, pa.array([3, 2, 1, 0], pa.int64()))
    units = expand_units(records, ids, {"r3": frozenset(ids[:1])}, layout=unit_layout(configs), parts=3, tail=2)
    per_record = units.group_by("id").aggregate([("config_ids", "count")]).to_pylist()
    assert {r["id"]: r["config_ids_count"] for r in per_record} == {"r0": 1, "r1": 1, "r2": 3, "r3": 3}
    rows = [(rid, c) for rid, cids in zip(units["id"].to_pylist(), units["config_ids"].to_pylist()) for c in cids]
    assert len(rows) == len(set(rows)) == 4 * len(ids) - 1   # every missing pair once; r3's full was done


def test_a_rerun_full_is_charged_once_to_the_first_row_it_pairs_with():
    conf = _grid()[0]
    full = dataclasses.replace(conf, config_id="f", full_config_id="f", policy="full")
    a, b = (dataclasses.replace(conf, config_id=x, full_config_id="f", policy="random") for x in "ab")
    edits = [UnitEdit(full, {"status": "ok", "loop_s": 3.0, "runtime_s": 3.5}, False),
             UnitEdit(a, {"status": "ok", "loop_s": 1.5}, True), UnitEdit(b, {"status": "ok", "loop_s": 1.0}, True)]
    pair_with_full(edits)
    charge_reruns(edits)
    assert edits[1].row["pairing_rerun_s"] == 3.5 and "pairing_rerun_s" not in edits[2].row
    assert (edits[1].row["speedup_vs_full"], edits[2].row["speedup_vs_full"]) == (2.0, 3.0)
    edits[0].emit = True   # written by this unit: nothing to charge
    edits[1].row.pop("pairing_rerun_s")
    charge_reruns(edits)
    assert not any("pairing_rerun_s" in e.row for e in edits)
