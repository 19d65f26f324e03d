"""SSH to an AWS cluster only from the configured network: what `trader up --ssh-cidr` hands
`ray up`, run through Ray 2.60's own AWS config code as far as it goes without AWS."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

pytest.importorskip("boto3")   # Ray's AWS provider imports it (pinned in pyproject: ray up on AWS needs it)
from ray.autoscaler._private.aws import config as aws  # noqa: E402
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

from cluster.cli import main  # noqa: E402
from cluster.commands import up  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
GROUP = "sg-0123456789abcdef0"


def _shipped() -> dict:
    return yaml.safe_load((ROOT / "ray-cluster.yaml").read_text())


def _generated(cidr: str = "203.0.113.7/32") -> dict:
    """The config `trader up --ssh-cidr` writes, for a group AWS called GROUP."""
    return up.in_security_group(up.with_ssh_cidr(_shipped(), up.ssh_network(cidr)), GROUP)


def _ssh_sources(rules: list[dict]) -> set[str]:
    return {r["CidrIp"] for p in rules if up._covers_ssh(p) for r in p.get("IpRanges", [])}


def test_ray_itself_opens_ssh_to_the_internet_whatever_the_file_adds():
    # why the group is not left to Ray: its rules for a group it configures, from the provider
    # config alone, always carry SSH from 0.0.0.0/0 — the CIDR only comes on top
    naive = up.with_ssh_cidr(_shipped(), "203.0.113.7/32")
    rules = aws._create_default_inbound_rules({GROUP}, naive["provider"]["security_group"]["IpPermissions"])
    assert _ssh_sources(rules) == {"0.0.0.0/0", "203.0.113.7/32"}


def test_ray_configures_no_group_for_the_generated_file(monkeypatch):
    # no AWS here: had Ray tried to create or change a group, boto3 would have had to reach EC2
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "none")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "none")
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:9")   # refuses connections
    config = prepare_config(_generated())
    validate_config(config)
    before = copy.deepcopy(config)
    after = aws._configure_security_group(config)
    assert after == before
    assert {t: n["node_config"]["SecurityGroupIds"] for t, n in after["available_node_types"].items()} == \
        {"head": [GROUP], "cpu": [GROUP], "gpu": [GROUP]}


def test_the_group_lets_in_its_own_nodes_and_ssh_from_the_cidr_only():
    config = _generated("203.0.113.0/24")
    rules = up.inbound_rules(config, GROUP)
    assert _ssh_sources(rules) == {"203.0.113.0/24"}
    assert aws._create_default_intracluster_inbound_rules({GROUP})[0] in rules       # Ray's own intra-cluster rule
    every_source = {r["CidrIp"] for p in rules for r in p.get("IpRanges", [])}
    assert "0.0.0.0/0" not in every_source
    assert config["provider"]["security_group"]["IpPermissions"][0]["IpRanges"][0]["CidrIp"] == "203.0.113.0/24"


def test_an_existing_group_loses_the_internet_ssh_of_an_earlier_plain_ray_up():
    # what EC2's describe_security_groups returns for a group Ray configured (UserId, empty lists)
    current = [{"IpProtocol": "-1", "FromPort": -1, "ToPort": -1, "IpRanges": [], "Ipv6Ranges": [], "PrefixListIds": [],
                "UserIdGroupPairs": [{"GroupId": GROUP, "UserId": "111122223333"}]},
               {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                "Ipv6Ranges": [], "PrefixListIds": [], "UserIdGroupPairs": []}]
    revoke, authorize = up.rule_changes(current, up.inbound_rules(_generated(), GROUP))
    assert revoke == [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    assert authorize == [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "203.0.113.7/32"}]}]
    # run again on the group as it is now: nothing to change
    now = [current[0], *authorize]
    assert up.rule_changes(now, up.inbound_rules(_generated(), GROUP)) == ([], [])


def test_the_cidr_is_normalised_and_the_internet_refused_unless_forced():
    assert up.ssh_network("203.0.113.7") == "203.0.113.7/32"
    assert up.ssh_network("203.0.113.77/24") == "203.0.113.0/24"
    with pytest.raises(up.CommandError, match="whole internet"):
        up.ssh_network("0.0.0.0/0")
    assert up.ssh_network("0.0.0.0/0", allow_anywhere=True) == "0.0.0.0/0"
    for bad in ("", None, "my-laptop", "2001:db8::/32"):
        with pytest.raises(up.CommandError):
            up.ssh_network(bad)
    opened = _shipped()
    opened["provider"]["security_group"]["IpPermissions"] = [
        {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 1024, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    with pytest.raises(up.CommandError, match="port 22"):
        up.with_ssh_cidr(opened, "203.0.113.7/32")


@pytest.mark.parametrize("argv, message", [
    ([], "--ssh-cidr"),
    (["--ssh-cidr", "0.0.0.0/0"], "whole internet"),
    (["--ssh-cidr", "10.0.0.0/8", "--cluster-config", "cluster/local.yaml"], "AWS cluster file"),
])
def test_trader_up_refuses_before_anything_reaches_aws(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["up", *argv]) == 2
    assert message in capsys.readouterr().err


def test_trader_down_hands_ray_the_file_trader_up_wrote(tmp_path, capsys, monkeypatch):
    # `ray down` on the project's AWS file would run Ray's own group configuration: SSH from 0.0.0.0/0
    from cluster.commands import down

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HOME", str(tmp_path))
    sent: list[list[str]] = []
    monkeypatch.setattr(down, "run", lambda cmd, env, check=True: sent.append(cmd) or 0)
    assert main(["down"]) == 2                                      # nothing written by `trader up` yet
    assert "trader up" in capsys.readouterr().err and sent == []
    generated = up.write_generated(_generated())
    assert main(["down"]) == 0
    exec_mlflow_stop, ray_down = sent
    assert exec_mlflow_stop[-2] == str(generated) and ray_down[-1] == str(generated)
    local = ROOT / "cluster" / "local.yaml"
    assert up.ray_file(local) == local                              # not AWS: the file as it is
