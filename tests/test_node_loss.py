"""Node loss: 2 of 3 GPU worker nodes removed mid-run (`ray.cluster_utils.Cluster.remove_node`, abruptly, as a
preempted spot instance goes), with 2 % of storage writes failing besides. The run must finish with every
(record, configuration) row written exactly once; the edits that were running on the lost nodes are redone on
another node (Ray restarts the lost actors, Ray Data resubmits their units; a unit's rows leave the actor
together, so a half-done unit writes nothing). Without replacements the one surviving GPU node finishes the
run; with 2 replacements (what the autoscaler does on a real cluster) they join it.

Each case runs in a process of its own (tests/cluster_scenarios.py): the session's Ray is not touched. About 2-3
minutes each on a 2-core machine: `pytest -m slow tests/test_node_loss.py -s` prints the timeline."""
import pytest
from cluster_helpers import run_scenario

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("replace", [0, 2], ids=["no-replacement", "2-replacements"])
def test_two_nodes_lost_mid_run_lose_and_duplicate_no_row(tmp_path, replace):
    out = run_scenario("node-loss", tmp_path, {"replace": replace}, timeout_s=900)
    print(f"\nGPU worker nodes over time (node loss, {replace} replacements):\n" + out["timeline_text"])
    print({k: out[k] for k in ("rows", "rows_ok", "rows_lost", "rows_duplicated", "edits_started",
                               "edits_on_removed_nodes", "edits_on_removed_nodes_redone_elsewhere")})
    p = out["params"]
    expected = p["records"] * 2

    assert out["finished"], out["timeline_text"]
    assert len(out["removed_nodes"]) == p["remove"] == 2
    assert 0 < out["images_at_removal"] < expected   # removed mid-run: some rows written, most not
    counts = [n for _, n in out["timeline"]]
    assert counts[0] == p["gpu_nodes"] == 3 and counts[-1] == p["gpu_nodes"] - p["remove"] + replace

    assert out["rows_lost"] == 0 and out["rows_duplicated"] == 0, out
    assert out["rows"] == out["rows_ok"] == expected and out["rows_error"] == 0, out   # faults absorbed
    # the edits interrupted on the lost nodes ran again on another node, and only those ran twice
    assert out["edits_on_removed_nodes_redone_elsewhere"] >= 1, out
    assert out["edits_run_more_than_once"] == out["edits_on_removed_nodes_redone_elsewhere"], out
