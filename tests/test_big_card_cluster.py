"""The bigger card on a real multi-node Ray cluster (`ray.cluster_utils.Cluster`, tests/cluster_scenarios.py
big-card): a CPU head, one plain GPU node and one declaring the custom resource `big_card` (as cluster.yaml's
H200 type does). Qwen-Image-Edit `full` + SpotEdit at 1024² and 2048²: the 2048² group (104.7 GiB by
`costs.memory`) must run only on the big node, every row written once. About a minute on a 2-core machine:
`pytest -m slow tests/test_big_card_cluster.py -s`."""
import pytest
from cluster_helpers import run_scenario

pytestmark = pytest.mark.slow


def test_the_group_an_80gb_card_cannot_hold_runs_only_on_the_big_card_node(tmp_path):
    out = run_scenario("big-card", tmp_path, timeout_s=600)
    print("\nrows by (width, node):", out["placed"], "pools:", out["pools"])
    expected = out["params"]["records"] * 4
    assert out["rows"] == out["rows_ok"] == expected and out["rows_lost"] == 0 and out["rows_duplicated"] == 0, out
    assert ["qwen-image-edit@big_card", {"big_card": 1.0}] in out["pools"], out["pools"]
    placed = dict((tuple(k), n) for k, n in out["placed"])
    assert placed.get((2048, "big")) == expected // 2 and (2048, "plain") not in placed, placed
    assert sum(n for (w, _), n in placed.items() if w == 1024) == expected // 2, placed
