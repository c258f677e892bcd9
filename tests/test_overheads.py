"""overheads/measure.py end to end at --scale tiny: every family, size and policy has finite positive timings, and
the shares are what the document says they are (own work ÷ block medians × depth × calls). No speed asserted."""
import json
import math

import pytest

from overheads import measure as overheads

POLICIES = {"tokendrop", "topi", "spotedit"}
SIZES = (64, 128)


@pytest.fixture(scope="module")
def doc(tmp_path_factory):
    out = tmp_path_factory.mktemp("overheads")
    overheads.main(["--scale", "tiny", "--family", "both", "--sizes", ",".join(map(str, SIZES)),
                    "--repeats", "2", "--warmup", "1", "--threads", "1", "--out", str(out)])
    written = json.loads((out / "overheads.json").read_text())
    assert "| flux | 64² | spotedit |" in (out / "overheads.md").read_text()
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
            "kv_full", "kv_partial"}
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
    # SpotEdit's 4 initial steps and resets at 7, 12, 17 (the official 13, 22, 31 of 50, scaled)
    assert flux == {"steps": 28, "tokendrop_masks": 27, "tokendrop_pruned_steps": 26, "topi_anchors": 3,
                    "topi_layers": [13, 18, 31], "spotedit_selector_calls": 21, "spotedit_partial_steps": 21,
                    "spotedit_full_steps": 7}
    assert qwen["steps"] == 50 and qwen["topi_anchors"] == 5 and qwen["tokendrop_pruned_steps"] == 46
    assert qwen["spotedit_full_steps"] == 4 + 3
