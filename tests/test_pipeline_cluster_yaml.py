"""cluster.yaml: validated offline the way `ray up` validates it.

`ray up` (ray.autoscaler._private.commands.create_or_update_cluster) does
``yaml.safe_load`` and then ``_bootstrap_config``: ``prepare_config`` (AWS defaults
merged, setup commands merged, per-type min/max workers filled), the AWS
provider's ``fillout_available_node_types_resources`` (EC2 DescribeInstanceTypes;
failures only warn), ``validate_config`` (jsonschema against ray-schema.json plus
cross-field checks) and finally the provider's ``bootstrap_config`` (IAM, key
pairs, subnets: AWS calls).  Here the two AWS calls are replaced: the instance
listing fails as it does offline, and ``bootstrap_config`` is the identity.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from ray.autoscaler._private import commands
from ray.autoscaler._private.aws import node_provider as aws_node_provider
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"

# Published EC2 specs of the GPU types we allow (vCPUs, GPUs, GB per GPU).
GPU_INSTANCES = {
    "p4de.24xlarge": (96, 8, 80),
    "p5.48xlarge": (192, 8, 80),
    "p5e.48xlarge": (192, 8, 141),
    "p5en.48xlarge": (192, 8, 141),
}
CPU_INSTANCES = {"m6i.2xlarge": 8, "m6i.4xlarge": 16, "m6i.8xlarge": 32, "m5.2xlarge": 8, "m5.4xlarge": 16}


@pytest.fixture
def raw_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture
def offline_aws(monkeypatch):
    """Replace the two AWS calls `ray up` makes while bootstrapping the config."""
    def no_network(*args, **kwargs):
        raise ConnectionError("offline test: EC2 DescribeInstanceTypes not reachable")

    monkeypatch.setattr(aws_node_provider, "list_ec2_instances", no_network)
    monkeypatch.setattr(aws_node_provider.AWSNodeProvider, "bootstrap_config", staticmethod(lambda cfg: cfg))


def test_raw_yaml_matches_ray_schema(raw_config):
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(raw_config, schema)


def test_bootstrap_like_ray_up(raw_config, offline_aws):
    config = commands._bootstrap_config(copy.deepcopy(raw_config), no_config_cache=True)
    validate_config(config)  # idempotent on the bootstrapped config
    head = config["head_node_type"]
    types = config["available_node_types"]
    assert head in types and config["provider"]["type"] == "aws"
    assert config["idle_timeout_minutes"] > 0
    assert types[head]["max_workers"] == 0
    # setup_commands were merged into both head and worker command lists
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert any("pip install" in c and c.rstrip().endswith(" .") for c in config[key]), key


def test_every_node_type_declares_resources(raw_config):
    head = raw_config["head_node_type"]
    workers = [t for t in raw_config["available_node_types"] if t != head]
    assert len(workers) >= 2
    for name, node in raw_config["available_node_types"].items():
        res = node["resources"]
        assert {"CPU", "GPU"} <= res.keys(), name
        itype = node["node_config"]["InstanceType"]
        if name == head:
            assert res["GPU"] == 0 and itype in CPU_INSTANCES and res["CPU"] <= CPU_INSTANCES[itype]
            continue
        assert itype in GPU_INSTANCES, f"{name}: {itype} is not an 80 GB-class GPU instance"
        vcpus, gpus, gb = GPU_INSTANCES[itype]
        assert res["GPU"] == gpus and res["CPU"] == vcpus and gb >= 80, name
        assert node["min_workers"] == 0 and 1 <= node["max_workers"] <= raw_config["max_workers"]
    kinds = {(n["node_config"]["InstanceType"], n["node_config"].get("InstanceMarketOptions", {}).get("MarketType"),
              tuple(sorted(n["resources"]))) for t, n in raw_config["available_node_types"].items() if t in workers}
    assert len(kinds) == len(workers)   # no two worker types the same instance, market and resources


def test_setup_installs_project_and_matching_ray(raw_config):
    cmds = raw_config["setup_commands"]
    assert any("pip install" in c and c.rstrip().endswith(" .") for c in cmds)
    pinned = [c for c in cmds if "ray[" in c and "==" in c]
    assert pinned, "pin Ray: cluster and launcher versions must match"
    assert f"=={ray.__version__}" in pinned[0], f"cluster pins another Ray than the launcher ({ray.__version__})"
    assert raw_config["file_mounts"], "the project must be copied to the nodes"


def test_no_credentials_in_cluster_yaml():
    text = CLUSTER_YAML.read_text().lower()
    for word in ("aws_secret_access_key", "aws_access_key_id", "secret_key", "session_token"):
        assert word not in text


def test_validation_catches_broken_configs(raw_config, offline_aws):
    """The checks above can fail: the same validation rejects broken variants."""
    schema = json.loads(SCHEMA.read_text())
    no_resources = copy.deepcopy(raw_config)
    worker = next(t for t in no_resources["available_node_types"] if t != no_resources["head_node_type"])
    del no_resources["available_node_types"][worker]["resources"]
    with pytest.raises(jsonschema.ValidationError, match="resources"):
        jsonschema.validate(no_resources, schema)

    too_many_min = copy.deepcopy(raw_config)
    too_many_min["available_node_types"][worker]["min_workers"] = too_many_min["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        validate_config(prepare_config(too_many_min))

    bad_head = copy.deepcopy(raw_config)
    bad_head["head_node_type"] = "nope"
    with pytest.raises(ValueError, match="head_node_type"):
        commands._bootstrap_config(bad_head, no_config_cache=True)
