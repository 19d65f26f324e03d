"""`trader up`: start (or update) the Ray cluster described by a `ray up` file.

SSH on AWS. Ray 2.60's AWS provider gives every node type without `node_config.SecurityGroupIds`
the group `provider.security_group.GroupName` and, when that group has no rules yet, authorizes
`_create_default_inbound_rules`: all traffic from the group itself, SSH (22) from 0.0.0.0/0 —
always — and then the file's `IpPermissions` on top (ray/autoscaler/_private/aws/config.py). So a
CIDR in `IpPermissions` opens SSH to it *besides* the whole internet; no setting of Ray's closes it.
What Ray does leave alone is a group it is given: with `SecurityGroupIds` on every node type,
`_configure_security_group` returns the config untouched. `trader up --ssh-cidr CIDR` therefore
writes the provider config (its `IpPermissions`: SSH from CIDR, plus the file's own extra rules),
makes the group itself (named as the file says, in the VPC the nodes go to) with exactly Ray's
intra-cluster rule plus those rules — revoking any other, e.g. the 0.0.0.0/0 an earlier plain
`ray up` added —, and hands `ray up` a copy of the file with that group on every node type.
0.0.0.0/0 is refused unless `--allow-ssh-from-anywhere`.
"""
from __future__ import annotations

import copy
import ipaddress
from pathlib import Path

from cluster.commands._common import (
    CommandError,
    add_settings_arg,
    cluster_yaml,
    new_parser,
    ray_cli,
    ray_env,
    reports_errors,
    run,
    settings_from,
)

SSH_PORT = 22


def register(subparsers) -> None:
    p = new_parser(
        subparsers, "up", help="start or update the Ray cluster (wraps `ray up`)",
        description="Start the cluster from a `ray up` file (default: ray-cluster.yaml, AWS), copy the "
                    "project to every node, install it, start Ray and the MLflow server on the head. "
                    "Running it again updates a running cluster. Afterwards the head's Ray auth token "
                    "is copied to ~/.ray/<cluster_name>.auth_token so `trader submit/status` can use it. "
                    "On AWS the nodes' security group lets in SSH from --ssh-cidr only (plus traffic "
                    "between the cluster's own nodes).",
        example_lines=["trader up --ssh-cidr 203.0.113.7/32", "trader up --cluster-config cluster/local.yaml",
                       "trader up --ssh-cidr 203.0.113.0/24 --no-restart   # sync files + setup, keep Ray running"])
    p.add_argument("--cluster-config", metavar="YAML", help="the `ray up` file (default: settings cluster.config)")
    p.add_argument("--ssh-cidr", metavar="CIDR",
                   help="AWS: the only network allowed to SSH to the nodes (your address: A.B.C.D/32)")
    p.add_argument("--allow-ssh-from-anywhere", action="store_true",
                   help="AWS: accept --ssh-cidr 0.0.0.0/0 (SSH open to the internet)")
    p.add_argument("--no-restart", action="store_true", help="do not restart Ray on running nodes")
    p.add_argument("--no-token", action="store_true", help="do not copy the head's Ray auth token back")
    add_settings_arg(p)
    p.set_defaults(func=main)


@reports_errors
def main(args) -> int:
    import yaml

    settings = settings_from(args)
    yaml_path = cluster_yaml(args, settings)
    env = ray_env(settings)
    config = yaml.safe_load(yaml_path.read_text())
    if config.get("provider", {}).get("type") == "aws" and _unconfigured(config):
        cidr = ssh_network(args.ssh_cidr, args.allow_ssh_from_anywhere)   # refused before anything reaches AWS
        config = with_ssh_cidr(config, cidr)
        config = in_security_group(config, ensure_security_group(config))
        yaml_path = write_generated(config)
        print(f"security group {config['provider']['security_group']['GroupName']}: SSH from {cidr} only; "
              f"cluster file for ray up: {yaml_path}")
    elif args.ssh_cidr:
        raise CommandError("--ssh-cidr applies to an AWS cluster file whose node types do not name their "
                           f"SecurityGroupIds; {yaml_path} is not one")
    cmd = ray_cli() + ["up", "-y", str(yaml_path)]
    if args.no_restart:
        cmd.append("--no-restart")
    run(cmd, env)
    if not args.no_token:
        fetch_token(yaml_path, env)
    return 0


def _unconfigured(config: dict) -> bool:
    """Does a node type leave its security group to Ray (and so get SSH from 0.0.0.0/0)?"""
    return any("SecurityGroupIds" not in t.get("node_config", {}) for t in config["available_node_types"].values())


def ssh_network(cidr: str | None, allow_anywhere: bool = False) -> str:
    """The network allowed to SSH, normalised ('203.0.113.7' → '203.0.113.7/32'); no default."""
    if not cidr:
        raise CommandError("an AWS cluster needs the network allowed to SSH to it: --ssh-cidr A.B.C.D/32 (your "
                           "address; Ray would open SSH to 0.0.0.0/0 otherwise)")
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise CommandError(f"--ssh-cidr {cidr!r} is not an IPv4 network such as 203.0.113.7/32") from None
    if net.version != 4:
        raise CommandError(f"--ssh-cidr {cidr!r}: give an IPv4 network (the group's IpRanges), e.g. 203.0.113.7/32")
    if net.prefixlen == 0 and not allow_anywhere:
        raise CommandError(f"--ssh-cidr {cidr} opens SSH to the whole internet: give your own network, or add "
                           "--allow-ssh-from-anywhere if that is really meant")
    return str(net)


def ssh_rule(cidr: str) -> dict:
    return {"FromPort": SSH_PORT, "ToPort": SSH_PORT, "IpProtocol": "tcp",
            "IpRanges": [{"CidrIp": cidr, "Description": "SSH (trader up --ssh-cidr)"}]}


def with_ssh_cidr(config: dict, cidr: str) -> dict:
    """The provider config with SSH from `cidr` as its one rule for networks on port 22 (the
    file's other extra rules kept; one of them letting a network reach port 22 is refused)."""
    config = copy.deepcopy(config)
    group = config["provider"].setdefault("security_group", {})
    group.setdefault("GroupName", f"ray-autoscaler-{config['cluster_name']}")   # Ray's own default name
    extra = group.get("IpPermissions", [])
    opening = [p for p in extra if _covers_ssh(p) and (p.get("IpRanges") or p.get("Ipv6Ranges"))]
    if opening:
        raise CommandError(f"provider.security_group.IpPermissions lets networks reach port 22 ({opening}): "
                           "remove that rule, --ssh-cidr says who may SSH")
    group["IpPermissions"] = [ssh_rule(cidr), *extra]
    return config


def _covers_ssh(permission: dict) -> bool:
    if permission.get("IpProtocol") in ("-1", -1):
        return True
    lo, hi = permission.get("FromPort", -1), permission.get("ToPort", -1)
    return permission.get("IpProtocol") == "tcp" and lo <= SSH_PORT <= hi


def inbound_rules(config: dict, group_id: str) -> list[dict]:
    """What the group lets in: Ray's own intra-cluster rule (everything from the group itself)
    and the provider config's IpPermissions — not Ray's SSH from 0.0.0.0/0."""
    from ray.autoscaler._private.aws.config import _create_default_intracluster_inbound_rules

    return [*_create_default_intracluster_inbound_rules({group_id}),
            *config["provider"]["security_group"]["IpPermissions"]]


def in_security_group(config: dict, group_id: str) -> dict:
    """Every node type that does not name its groups goes into `group_id`, so Ray configures none."""
    config = copy.deepcopy(config)
    for node_type in config["available_node_types"].values():
        node_type["node_config"].setdefault("SecurityGroupIds", [group_id])
    return config


def _atoms(permissions: list[dict]) -> set[tuple]:
    """An IpPermissions list as single (protocol, from, to, kind, source) grants, so two lists
    compare however AWS groups them (describe adds UserId, empty lists, descriptions)."""
    out = set()
    for p in permissions:
        head = (str(p.get("IpProtocol")), int(p.get("FromPort", -1)), int(p.get("ToPort", -1)))
        out |= {(*head, "cidr", r["CidrIp"]) for r in p.get("IpRanges", [])}
        out |= {(*head, "cidr6", r["CidrIpv6"]) for r in p.get("Ipv6Ranges", [])}
        out |= {(*head, "group", g["GroupId"]) for g in p.get("UserIdGroupPairs", [])}
        out |= {(*head, "prefix", g["PrefixListId"]) for g in p.get("PrefixListIds", [])}
    return out


def _permission(atom: tuple) -> dict:
    proto, lo, hi, kind, source = atom
    key, field = {"cidr": ("IpRanges", "CidrIp"), "cidr6": ("Ipv6Ranges", "CidrIpv6"),
                  "group": ("UserIdGroupPairs", "GroupId"), "prefix": ("PrefixListIds", "PrefixListId")}[kind]
    return {"IpProtocol": proto, "FromPort": lo, "ToPort": hi, key: [{field: source}]}


def rule_changes(current: list[dict], wanted: list[dict]) -> tuple[list[dict], list[dict]]:
    """(to revoke, to authorize) turning the group's `current` IpPermissions into `wanted`."""
    have, want = _atoms(current), _atoms(wanted)
    return [_permission(a) for a in sorted(have - want)], [_permission(a) for a in sorted(want - have)]


def ensure_security_group(config: dict) -> str:
    """The provider's named group, in the VPC the nodes go to (their SubnetIds' VPC, else the
    region's default VPC, which is where Ray picks subnets), made by Ray's own helper if missing,
    with exactly `inbound_rules`. Returns its id. Needs AWS credentials (as `ray up` does)."""
    from ray.autoscaler._private.aws.config import (
        _create_security_group,
        _get_security_group,
        _get_vpc_id_or_die,
        _resource,
    )

    ec2 = _resource("ec2", config)
    subnets = [t["node_config"]["SubnetIds"][0] for t in config["available_node_types"].values()
               if t["node_config"].get("SubnetIds")]
    if subnets:
        vpc_id = _get_vpc_id_or_die(ec2, subnets[0])
    else:
        default = list(ec2.vpcs.filter(Filters=[{"Name": "isDefault", "Values": ["true"]}]))
        if not default:
            raise CommandError(f"no default VPC in {config['provider']['region']}: name the nodes' SubnetIds "
                               "in the cluster file")
        vpc_id = default[0].id
    name = config["provider"]["security_group"]["GroupName"]
    group = _get_security_group(config, vpc_id, name) or _create_security_group(config, vpc_id, name)
    revoke, authorize = rule_changes(group.ip_permissions, inbound_rules(config, group.id))
    if revoke:   # e.g. SSH from 0.0.0.0/0 that a plain `ray up` gave this group earlier
        group.revoke_ingress(IpPermissions=revoke)
    if authorize:
        group.authorize_ingress(IpPermissions=authorize)
    return group.id


def generated_path(cluster_name: str) -> Path:
    return Path.home() / ".cache" / "kis-ray-trader" / "clusters" / f"{cluster_name}.yaml"


def ray_file(yaml_path: Path) -> Path:
    """The file the Ray CLI gets for a cluster `trader up` started: for an AWS file that leaves the
    security group to Ray, the generated one (`ray down`/`exec` on the project's file would make
    Ray configure a group of its own, with SSH from 0.0.0.0/0); any other file as it is."""
    import yaml

    config = yaml.safe_load(yaml_path.read_text())
    if config.get("provider", {}).get("type") != "aws" or not _unconfigured(config):
        return yaml_path
    generated = generated_path(config["cluster_name"])
    if not generated.is_file():
        raise CommandError(f"{yaml_path} leaves the security group to Ray and `trader up` wrote no cluster file for "
                           f"{config['cluster_name']!r} ({generated}): Ray would open SSH to the internet. "
                           f"Pass the file `trader up` printed with --cluster-config")
    return generated


def write_generated(config: dict) -> Path:
    """The cluster file `ray up` gets (~/.cache/kis-ray-trader/clusters/<cluster_name>.yaml): the
    project's, plus the security group. `file_mounts` stay relative to the project root, where
    `run` starts ray."""
    import yaml

    path = generated_path(config["cluster_name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by `trader up` from the project's cluster file: edit that one, not this\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path


def fetch_token(yaml_path: Path, env: dict) -> Path:
    """Copy the head's ~/.ray/auth_token to ~/.ray/<cluster_name>.auth_token (mode 600)."""
    import yaml
    name = yaml.safe_load(yaml_path.read_text()).get("cluster_name", "default")
    dest = Path.home() / ".ray" / f"{name}.auth_token"
    dest.parent.mkdir(parents=True, exist_ok=True)
    run(ray_cli() + ["rsync-down", str(yaml_path), "~/.ray/auth_token", str(dest)], env)
    dest.chmod(0o600)
    print(f"Ray auth token of the cluster saved to {dest}; set cluster.auth_token_file to it "
          f"(or KRT_CLUSTER__AUTH_TOKEN_FILE={dest}).")
    return dest
