"""`trader up`: start (or update) the Ray cluster described by a `ray up` file."""
from __future__ import annotations

from pathlib import Path

from cluster.commands._common import add_settings_arg, cluster_yaml, new_parser, ray_cli, ray_env, reports_errors, run, settings_from


def register(subparsers) -> None:
    p = new_parser(
        subparsers, "up", help="start or update the Ray cluster (wraps `ray up`)",
        description="Start the cluster from a `ray up` file (default: ray-cluster.yaml, AWS), copy the "
                    "project to every node, install it, start Ray and the MLflow server on the head. "
                    "Running it again updates a running cluster. Afterwards the head's Ray auth token "
                    "is copied to ~/.ray/<cluster_name>.auth_token so `trader submit/status` can use it.",
        example_lines=["trader up", "trader up --cluster-config cluster/local.yaml",
                       "trader up --no-restart        # sync files + setup, keep Ray running"])
    p.add_argument("--cluster-config", metavar="YAML", help="the `ray up` file (default: settings cluster.config)")
    p.add_argument("--no-restart", action="store_true", help="do not restart Ray on running nodes")
    p.add_argument("--no-token", action="store_true", help="do not copy the head's Ray auth token back")
    add_settings_arg(p)
    p.set_defaults(func=main)


@reports_errors
def main(args) -> int:
    settings = settings_from(args)
    yaml_path = cluster_yaml(args, settings)
    env = ray_env(settings)
    cmd = ray_cli() + ["up", "-y", str(yaml_path)]
    if args.no_restart:
        cmd.append("--no-restart")
    run(cmd, env)
    if not args.no_token:
        fetch_token(yaml_path, env)
    return 0


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
