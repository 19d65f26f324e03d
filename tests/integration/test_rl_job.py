"""`ray job submit --working-dir . -- python -m training.tune ...` against a running `ray start --head`.

The head is ours alone: a free port, its own temp dir, started with `--block` in its own process
group and stopped by signalling that group (never `ray stop`, which would kill every Ray on the
host, including other sessions')."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    port, dash = _free_port(), _free_port()
    # every fixed default port too: the session's own local Ray (ray_local) already holds the
    # dashboard agent's 52365, and a head whose agent cannot bind accepts no job
    agent_ports = [f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
                   f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}"]
    temp = tempfile.mkdtemp(prefix="krt-rayhead-", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": f"{BIN}:{os.environ['PATH']}",
           "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2", "--block",
         "--node-ip-address=127.0.0.1", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", f"--temp-dir={temp}", "--disable-usage-stats", *agent_ports],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", dash), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("ray start --head exited early")
            time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        pytest.fail("the Ray head's dashboard never came up")
    yield address, env
    os.killpg(proc.pid, signal.SIGTERM)  # --block: ray start tears down what it started
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    time.sleep(2)
    try:  # anything of our head's group still alive (seen under heavy load): end it
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_job_submit_runs_the_search_on_the_cluster(ray_head, tmp_path):
    address, env = ray_head
    out = tmp_path / "out.json"
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    runtime_env = json.dumps({"env_vars": {"KRT_CODE_VERSION": sha}})
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
           "--runtime-env-json", runtime_env, "--",
           "python", "-m", "training.tune", "--algo", "dqn", "--smoke", "--num-samples", "1",
           "--max-iters", "1", "--seeds", "1", "--ray-address", "auto",
           "--storage", str(tmp_path / "tune"), "--mlflow-dir", str(tmp_path / "mlflow"), "--json", str(out)]
    env = {k: v for k, v in env.items() if k != "MLFLOW_TRACKING_URI"}
    for _ in range(30):  # the head's job agent registers a few seconds after the dashboard is up
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
        if "No available agent" not in done.stderr + done.stdout:
            break
        time.sleep(2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout
    result = json.loads(out.read_text())
    assert result[0]["model"] == "agent-dqn" and result[0]["version"] == "1"
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    run = c.get_run(result[0]["run_id"])
    assert run.data.tags["code_version"] == sha  # the upload has no .git; the job passed it
    assert "val_sharpe" in run.data.metrics
