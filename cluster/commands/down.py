"""`trader down`: stop the MLflow server on the head, then tear the cluster down (`ray down`)."""
from __future__ import annotations

from cluster.commands._common import add_settings_arg, cluster_yaml, new_parser, ray_cli, ray_env, reports_errors, run, settings_from
from cluster.commands.up import ray_file

STOP_MLFLOW = "test -f ~/kis-ray-trader/cluster/mlflow_server.sh && bash ~/kis-ray-trader/cluster/mlflow_server.sh stop || true"


def register(subparsers) -> None:
    p = new_parser(
        subparsers, "down", help="tear the Ray cluster down (wraps `ray down`)",
        description="Stop the MLflow server the head started, then `ray down` the cluster: Ray stops "
                    "on every node and cloud nodes are terminated. MLflow data stays on the head's disk "
                    "for a local cluster (on AWS it goes with the instance: back it up first).",
        example_lines=["trader down", "trader down --cluster-config cluster/local.yaml"])
    p.add_argument("--cluster-config", metavar="YAML", help="the `ray up` file (default: settings cluster.config)")
    p.add_argument("--keep-mlflow", action="store_true", help="leave the MLflow server running")
    add_settings_arg(p)
    p.set_defaults(func=main)


@reports_errors
def main(args) -> int:
    settings = settings_from(args)
    yaml_path = ray_file(cluster_yaml(args, settings))   # on AWS: the file `trader up` wrote
    env = ray_env(settings)
    if not args.keep_mlflow:
        # MLflow is not a Ray process: `ray down` would leave it running on a local cluster.
        run(ray_cli() + ["exec", str(yaml_path), STOP_MLFLOW], env, check=False)
    run(ray_cli() + ["down", "-y", str(yaml_path)], env)
    return 0
