"""overheads/measure.py end to end at --scale tiny: every family, size and policy has finite positive timings, and
the shares are what the document says they are (own work ÷ block medians × depth × calls). No speed asserted."""
import copy
import json
import math

import pytest

from overheads import measure as overheads
from overheads import table

POLICIES = {"tokendrop", "topi", "spotedit", "focus", "regione"}
SIZES = (64, 128)
# refreshes at Kontext's 9, 15, 21 (of 28) and Qwen's 15, 25, 35 (of 50); source keys near the region only
FOCUS = {"refresh": 0.2, "final": 0.1, "reference_margin": 2}


@pytest.fixture(scope="module")
def doc(tmp_path_factory):
    out = tmp_path_factory.mktemp("overheads")
    overheads.main(["--scale", "tiny", "--family", "both", "--sizes", ",".join(map(str, SIZES)),
                    "--repeats", "2", "--warmup", "1", "--threads", "1", "--out", str(out),
                    "--focus", ",".join(f"{k}={v}" for k, v in FOCUS.items())])
    written = json.loads((out / "overheads.json").read_text())
    text = (out / "overheads.md").read_text()
    assert all(f"| {f} | {s}² | {p} |" in text for f in ("flux", "qwen") for s in SIZES for p in POLICIES)
    return written


def _positive(x):
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_every_family_size_and_policy_is_there(doc):
    assert doc["scale"] == "tiny" and doc["machine"]["torch_threads"] == 1
    assert doc["machine"]["load_start"] is not None and doc["machine"]["load_end"] is not None
    assert {(r["family"], r["size"]) for r in doc["results"]} == {(f, s) for f in ("flux", "qwen") for s in SIZES}
    for r in doc["results"]:
        assert set(r["policies"]) == POLICIES
        kinds = {"flux": {"dual", "single"}, "qwen": {"block"}}[r["family"]]
        assert set(r["depth"]) == kinds
        expected = {f"block_{k}" for k in kinds} | {f"topi_stats_{k}" for k in kinds} | {
            "topi_observe", "tokendrop_policy", "tokendrop_reg", "spotedit_first", "spotedit_selector",
            "kv_full", "kv_partial", "focus_partition", "regione_partition", "kv_static", "kv_static_all"}
        assert set(r["timings"]) == expected
        for name, t in r["timings"].items():
            assert all(_positive(s) for s in t["samples"]), name
            assert t["min"] <= t["p25"] <= t["median"] <= t["p75"] <= t["max"], name


def test_shares_are_own_work_over_block_times_depth(doc):
    for r in doc["results"]:
        t = r["timings"]
        step = r["calls"] * sum(t[f"block_{k}"]["median"] * n for k, n in r["depth"].items())
        assert r["depth"] == ({"dual": 19, "single": 38} if r["family"] == "flux" else {"block": 60})
        assert r["calls"] == (1 if r["family"] == "flux" else 2)
        for name, p in r["policies"].items():
            assert _positive(p["own_step_s"]) and _positive(p["own_edit_s"]), name
            assert p["step_s"] == pytest.approx(step, rel=1e-12)
            assert p["edit_s"] == pytest.approx(r["schedule"]["steps"] * step, rel=1e-12)
            assert p["share_step"] == pytest.approx(p["own_step_s"] / step, rel=1e-12)
            assert p["share_edit"] == pytest.approx(p["own_edit_s"] / p["edit_s"], rel=1e-12)
            assert p["own_step_s"] == pytest.approx(sum(x["step_s"] for x in p["pieces"].values()), rel=1e-12)
            assert p["within_limit"] == (p["share_edit"] <= doc["limit"])
            assert (p["why"] is None) == (max(p["share_step"], p["share_edit"]) <= doc["limit"]), name
        spot = r["policies"]["spotedit"]["pieces"]
        assert spot["spotedit_selector"]["step_s"] == t["spotedit_selector"]["median"]


def test_schedules_come_from_the_policies_defaults(doc):
    flux = next(r for r in doc["results"] if r["family"] == "flux")["schedule"]
    qwen = next(r for r in doc["results"] if r["family"] == "qwen")["schedule"]
    # Kontext 28 steps: TokenDrop's 2 full steps, ToPi's anchors at 0, 10, 20 on the paper's layers,
    # SpotEdit's 4 initial steps and resets at 7, 12, 17 (the official 13, 22, 31 of 50, scaled); focus (FOCUS):
    # 3 warm-up steps, refreshes at 9, 15, 21, the last 3 steps full; RegionE: full 0-5, 15, 26, 27
    assert flux == {"steps": 28, "tokendrop_masks": 27, "tokendrop_pruned_steps": 26, "topi_anchors": 3,
                    "topi_layers": [13, 18, 31], "spotedit_selector_calls": 21, "spotedit_partial_steps": 21,
                    "spotedit_full_steps": 7, "focus_partitions": 4, "focus_refresh_steps": 3,
                    "focus_partial_steps": 19, "focus_full_steps": 9, "regione_partitions": 1,
                    "regione_partial_steps": 19, "regione_full_steps": 9}
    assert qwen["steps"] == 50 and qwen["topi_anchors"] == 5 and qwen["tokendrop_pruned_steps"] == 46
    assert qwen["spotedit_full_steps"] == 4 + 3


def test_focus_and_regione_rows(doc):
    assert {k: doc["regions"][k] for k in ("active", "keys", "focus")} == {"active": 0.2, "keys": 0.35, "focus": FOCUS}
    assert doc["regions"]["focus_params"]["refresh"] == 0.2
    for r in doc["results"]:
        s, t, per_edit = r["schedule"], r["timings"], r["per_edit"]
        # focus partitions once after its warm-up and again at each refresh step (all followed by partial steps)
        assert s["focus_refresh_steps"] == 3 and s["focus_partitions"] == 1 + s["focus_refresh_steps"]
        assert s["regione_partitions"] == 1 and per_edit["regione_partition"] == 1
        assert s["focus_partial_steps"] + s["focus_full_steps"] == s["steps"]
        layers_calls = sum(r["depth"].values()) * r["calls"]
        assert per_edit["kv_static"] == {"focus": s["focus_partial_steps"] * layers_calls}
        assert per_edit["kv_static_all"] == {"regione": s["regione_partial_steps"] * layers_calls}
        assert per_edit["kv_full"] == {p: s[f"{p}_full_steps"] * layers_calls for p in ("spotedit", "focus", "regione")}
        assert 0 < r["region_shares"]["active"] <= r["region_shares"]["keys"] < 1
        for policy, partition, kv in (("focus", "focus_partition", "kv_static"),
                                      ("regione", "regione_partition", "kv_static_all")):
            pieces = r["policies"][policy]["pieces"]
            assert set(pieces) == {partition, kv, "kv_full"}
            assert all(_positive(p["edit_s"]) for p in pieces.values()), policy
            assert pieces[partition]["edit_s"] == pytest.approx(
                s[f"{policy}_partitions"] * t[partition]["median"], rel=1e-12)
            assert pieces[kv]["step_s"] == pytest.approx(layers_calls * t[kv]["median"], rel=1e-12)


def test_focus_keeping_every_source_key_is_priced_with_the_full_join(doc):
    r = copy.deepcopy(next(r for r in doc["results"] if r["family"] == "flux"))
    r["region_shares"]["keys"] = 1.0   # reference_margin None
    focus = table.pieces(r)["focus"]
    assert [name for name, _, _ in focus] == ["focus_partition", "kv_static_all", "kv_full"]
    assert table.per_edit(r)["kv_static"] == {}
    assert table.per_edit(r)["kv_static_all"] == {p: r["schedule"][f"{p}_partial_steps"] * 57
                                                  for p in ("focus", "regione")}


def test_region_schedules_with_the_policies_defaults():
    # Kontext 28 steps: focus's warm-up is 3 steps, then (no refresh, no final steps) partial to the end;
    # RegionE's full steps are 0-5, 15, 26, 27 and its one partition is at step 5
    assert table.focus_schedule("flux", 28, 57, {"refresh": 0, "final": 0}) == {
        "focus_partitions": 1, "focus_refresh_steps": 0, "focus_partial_steps": 25, "focus_full_steps": 3}
    # the defaults at 50 steps: a 5-step warm-up, refreshes at 17, 29 and 41, each followed by partial steps
    assert table.focus_schedule("qwen", 50, 60) == {"focus_partitions": 4, "focus_refresh_steps": 3,
                                                    "focus_partial_steps": 42, "focus_full_steps": 8}
    assert table.focus_schedule("flux", 28, 57) == {"focus_partitions": 4, "focus_refresh_steps": 3,
                                                    "focus_partial_steps": 22, "focus_full_steps": 6}
    assert table.regione_schedule("flux", 28, 57) == {"regione_partitions": 1, "regione_partial_steps": 19,
                                                      "regione_full_steps": 9}
    assert table.regione_schedule("qwen", 50, 60)["regione_full_steps"] == 9   # 0-5, 15, 48, 49
