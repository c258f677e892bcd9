"""The unit of work (a record x its configurations of one model): run order, what a resumed unit re-runs, the
expansion of records into units, and the in-unit pairing with `full`."""
import pyarrow as pa

import dataclasses

from pipeline.config import expand_grid, parse_config
from pipeline.records import RECORD_SCHEMA, new_record
from pipeline.unit_stage import UnitEdit, pair_with_full
from pipeline.units import UNIT_SCHEMA, expand_units, needed_configs, run_order

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
