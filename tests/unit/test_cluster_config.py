"""The cluster files pass Ray's own cluster-config validation and keep the promised shape:
project installed on every node, MLflow server on the head, dashboard and Serve not exposed."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def _validated(config: dict) -> dict:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_aws_cluster_yaml_passes_ray_validation():
    cfg = _validated(_load("ray-cluster.yaml"))
    assert cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] == "head"
    assert {"head", "cpu", "gpu"} <= set(types)
    assert types["gpu"]["min_workers"] == 0, "the GPU type is optional: never launched unless asked for"
    assert types["cpu"]["max_workers"] >= 1


def test_aws_cluster_opens_nothing_but_ssh():
    cfg = _load("ray-cluster.yaml")
    # Ray's security group adds intra-cluster traffic + SSH; extra rules would open more ports.
    assert cfg["provider"]["security_group"].get("IpPermissions", []) == []
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in head, "nothing on the head binds every interface"


@pytest.mark.parametrize("name", ["ray-cluster.yaml", "cluster/local.yaml"])
def test_cluster_installs_project_and_runs_mlflow_on_head(name):
    cfg = _validated(_load(name))
    assert cfg["file_mounts"]["~/kis-ray-trader"] == "."
    setup = " ".join(cfg["setup_commands"])
    assert "pip install" in setup and "-e ~/kis-ray-trader" in setup
    head = " ".join(cfg["head_start_ray_commands"])
    assert "bash ~/kis-ray-trader/cluster/mlflow_server.sh start" in head
    script = (ROOT / "cluster" / "mlflow_server.sh").read_text()
    assert '--backend-store-uri "sqlite:///' in script and "--artifacts-destination" in script
    # MLflow on loopback only; the workers' way in is the token-checking proxy
    assert "--host 127.0.0.1" in script and "0.0.0.0" not in script and "cluster.mlflow_proxy serve" in script
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP" in c for c in cfg["worker_start_ray_commands"])


def test_local_yaml_prepares_head_and_workers():
    cfg = _validated(_load("cluster/local.yaml"))
    assert cfg["provider"]["type"] == "local"
    assert cfg["provider"]["head_ip"] and isinstance(cfg["provider"]["worker_ips"], list)
    node_type = cfg["available_node_types"][cfg["head_node_type"]]
    assert node_type["max_workers"] == len(cfg["provider"]["worker_ips"])


def test_validation_catches_a_broken_cluster_file():
    cfg = _load("ray-cluster.yaml")
    cfg["head_node_type"] = "no-such-type"
    with pytest.raises(Exception, match="head_node_type"):
        validate_config(prepare_config(cfg))
    cfg = _load("ray-cluster.yaml")
    cfg["available_node_types"]["cpu"]["min_workers"] = 99
    with pytest.raises(ValueError, match="max_workers"):
        validate_config(prepare_config(cfg))


@pytest.mark.parametrize("name", ["ray-cluster.yaml", "cluster/local.yaml"])
def test_token_auth_is_on_for_head_and_workers(name):
    cfg = _validated(_load(name))
    head = cfg["head_start_ray_commands"]
    gen = next(i for i, c in enumerate(head) if "ray get-auth-token --generate" in c)
    start = next(i for i, c in enumerate(head) if "ray start --head" in c)
    assert gen < start, "the token must exist before `ray start --head`, or Ray starts without auth"
    assert "> /dev/null" in head[gen], "the token must not be printed into ray up's logs"
    assert "~/.ray/auth_token" in cfg["cluster_synced_files"]
