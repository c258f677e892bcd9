"""Autoscaling exercised on Ray's own autoscaler, not only validated as a config file: a fake multi-node cluster
(`ray.cluster_utils.AutoscalingCluster`'s setup, the `fake_multinode` provider) with a CPU-only head and a GPU
worker type (`min_workers: 0`, `max_workers: 2`, fake GPUs); a run of `dropedit run`'s graph whose actors ask for
one GPU each (pool of 1 to 2) starts with no GPU node. The pool's demand must bring GPU nodes up, every row must
be written exactly once, and the idle timeout must take the nodes back to none.

It runs in a process of its own (tests/cluster_scenarios.py, its own cluster, folder and port): the session's Ray
is not touched. About 2 minutes on a 2-core machine: `pytest -m slow tests/test_autoscaling.py -s` prints the
node-count timeline. A fast test checks which of cluster.yaml's GPU types Ray's scheduler launches first."""
import functools
from pathlib import Path

import pytest
import yaml
from cluster_helpers import run_scenario
from ray.autoscaler._private.node_provider_availability_tracker import (
    NodeAvailabilitySummary,
)
from ray.autoscaler._private.resource_demand_scheduler import (
    _default_utilization_scorer,
    get_nodes_for,
)

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_cluster_yaml_gpu_demand_takes_spot_first_then_on_demand():
    """What cluster.yaml's comments say, by Ray's own node-type choice (the v1 autoscaler's `get_nodes_for`):
    1-GPU actors fill the spot type up to its max_workers, the rest goes to the on-demand H100 type."""
    cfg = yaml.safe_load(CLUSTER_YAML.read_text())
    types, head = cfg["available_node_types"], cfg["head_node_type"]
    spot = [t for t, n in types.items() if n["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"]
    assert spot == ["gpu.h200-141gb.x8.spot"]
    scorer = functools.partial(_default_utilization_scorer,
                               node_availability_summary=NodeAvailabilitySummary(node_availabilities={}))

    def launched(gpus: int) -> dict[str, int]:
        nodes, residual = get_nodes_for(types, {}, head, cfg["max_workers"], [{"GPU": 1}] * gpus, scorer)
        assert not residual
        return dict(nodes)

    assert launched(8) == {spot[0]: 1}                                   # one 8-GPU spot node
    per_type = types[spot[0]]["max_workers"]
    assert launched(8 * (per_type + 2)) == {spot[0]: per_type, "gpu.h100-80gb.x8": 2}


def test_cluster_yaml_big_card_demand_lands_only_on_the_h200_type():
    """A run's `actors.big_card` pool (pipeline.pools) asks for {"GPU": 1, "big_card": 1}: only the on-demand 141 GB
    type declares it (plain GPU demand still takes spot first: the test above)."""
    cfg = yaml.safe_load(CLUSTER_YAML.read_text())
    types, head = cfg["available_node_types"], cfg["head_node_type"]
    assert [t for t, n in types.items() if "big_card" in n["resources"]] == ["gpu.h200-141gb.x8.big"]
    scorer = functools.partial(_default_utilization_scorer,
                               node_availability_summary=NodeAvailabilitySummary(node_availabilities={}))
    ask = [{"GPU": 1, "big_card": 1}] * 12
    nodes, residual = get_nodes_for(types, {}, head, cfg["max_workers"], ask, scorer)
    assert dict(nodes) == {"gpu.h200-141gb.x8.big": 2} and not residual


@pytest.mark.slow
def test_gpu_workers_come_up_for_the_pool_and_go_after_the_idle_timeout(tmp_path):
    out = run_scenario("autoscaling", tmp_path, timeout_s=900)
    print("\nGPU worker nodes over time (autoscaling):\n" + out["timeline_text"])
    print({k: out[k] for k in ("run_s", "rows", "rows_ok", "rows_lost", "rows_duplicated", "edit_nodes")})
    p = out["params"]
    counts = [n for _, n in out["timeline"]]
    events = {what: t for t, what in out["events"]}

    assert out["gpu_nodes_at_start"] == 0 and counts[0] == 0, out["timeline_text"]   # no GPU node before
    assert 1 <= max(counts) <= p["pool"][1] == p["max_gpu_workers"], out["timeline_text"]
    first_up = next(t for t, n in out["timeline"] if n > 0)
    assert events["run starts"] < first_up < events["run ends"]   # launched for the run's demand
    assert 1 <= out["edit_nodes"] <= p["max_gpu_workers"]   # edits ran on the nodes it launched

    expected = p["records"] * out["summary"]["configurations"]
    assert (out["rows"], out["pairs"], out["rows_ok"]) == (expected, expected, expected), out
    assert out["rows_lost"] == 0 and out["rows_duplicated"] == 0 and out["rows_error"] == 0

    assert out["released"], out.get("autoscaler_log", "")
    last_t, last_n = out["timeline"][-1]
    assert last_n == 0 and last_t > events["run ends"], out["timeline_text"]   # released after the run
