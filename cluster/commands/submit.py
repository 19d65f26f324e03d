"""`trader submit`: run a command on the cluster as a Ray job, with this project as working dir."""
from __future__ import annotations

import shlex
import time

from cluster.commands._common import (
    JOB_EXCLUDES,
    PROJECT_ROOT,
    CommandError,
    add_settings_arg,
    apply_ray_env,
    new_parser,
    reports_errors,
    settings_from,
)

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def register(subparsers) -> None:
    p = new_parser(
        subparsers, "submit", help="submit a job (the project is the working dir)",
        description="Submit ENTRYPOINT as a Ray job to the cluster's job API (the Ray dashboard address: "
                    "with `ray dashboard ray-cluster.yaml` running it is http://127.0.0.1:8265). The project "
                    "folder is uploaded as the job's working dir (without .git, .venv, runs/, mlruns/, .env). "
                    "Waits and streams the logs unless --no-wait; exits non-zero if the job fails.",
        example_lines=["trader submit -- python -m training.tune --smoke",
                       "trader submit --address http://127.0.0.1:8265 -- python -m cluster.cli serve",
                       "trader submit --no-wait --env MLFLOW_TRACKING_URI=http://127.0.0.1:5000 -- "
                       "python -m training.tune"])
    p.add_argument("--address", help="job API address (default: settings cluster.dashboard_url)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment for the job")
    p.add_argument("--job-id", help="submission id (default: generated)")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait before giving up (job keeps running)")
    add_settings_arg(p)
    p.add_argument("entrypoint", nargs="+", help="the command to run, after `--`")
    p.set_defaults(func=main)


@reports_errors
def main(args) -> int:
    settings = settings_from(args)
    apply_ray_env(settings)
    env_vars = {}
    for item in args.env:
        if "=" not in item:
            raise CommandError(f"--env wants KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        env_vars[k] = v
    address = args.address or settings.cluster.dashboard_url
    from ray.job_submission import JobSubmissionClient
    try:
        client = JobSubmissionClient(address)
    except Exception as exc:
        raise CommandError(f"cannot reach the Ray job API at {address}: {exc}. Is `ray dashboard <yaml>` "
                           "forwarding the port, and is the auth token set (cluster.auth_token_file)?") from None
    runtime_env = {"working_dir": str(PROJECT_ROOT), "excludes": JOB_EXCLUDES}
    if env_vars:
        runtime_env["env_vars"] = env_vars
    job_id = client.submit_job(entrypoint=shlex.join(args.entrypoint), runtime_env=runtime_env,
                               submission_id=args.job_id)
    print(f"submitted job {job_id} to {address}", flush=True)
    if args.no_wait:
        return 0
    return wait(client, job_id, args.timeout)


def wait(client, job_id: str, timeout: float | None) -> int:
    """Stream the job's logs until it ends; exit code 0 only if it SUCCEEDED."""
    shown = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        st = client.get_job_status(job_id)
        status = str(getattr(st, "value", st))
        logs = client.get_job_logs(job_id)
        if len(logs) > shown:
            print(logs[shown:], end="", flush=True)
            shown = len(logs)
        if status in TERMINAL:
            info = client.get_job_info(job_id)
            print(f"job {job_id}: {status}" + (f" ({info.message})" if info.message and status != "SUCCEEDED" else ""))
            return 0 if status == "SUCCEEDED" else 1
        if deadline is not None and time.monotonic() > deadline:
            print(f"job {job_id}: still {status} after {timeout} s; it keeps running")
            return 3
        time.sleep(1.0)
