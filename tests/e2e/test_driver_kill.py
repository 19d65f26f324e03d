"""A `trader demo` whose driver is killed with SIGKILL leaves no Ray process behind (Ray's
processes share the driver's fate): nothing keeps trading, listening or holding the journal."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _group(pgid: int) -> list[str]:
    # -ww: whole command lines (ps cuts them to $COLUMNS otherwise, and pytest sets it)
    out = subprocess.run(["ps", "-ww", "-eo", "pgid=,pid=,args="], capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.split() and int(line.split()[0]) == pgid]


def test_no_ray_process_outlives_a_killed_driver(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", "demo", "--days", "200", "--out", str(tmp_path)],
                            cwd=ROOT, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not any("raylet" in p for p in _group(proc.pid)) or not (tmp_path / "journal.sqlite").exists():
            assert proc.poll() is None and time.time() < deadline, "the demo never got its local Ray up"
            time.sleep(0.5)
        assert any("gcs_server" in p for p in _group(proc.pid))
        os.kill(proc.pid, signal.SIGKILL)            # the driver alone, not its group
        proc.wait(timeout=10)
        deadline = time.time() + 30
        while (left := _group(proc.pid)) and time.time() < deadline:
            time.sleep(0.5)
        assert left == [], "\n".join(left)
    finally:
        if _group(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)


DRIVER_STARTING_WORKERS = """
import time
import ray
from cluster.fate import watch_driver

ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
watch_driver()

@ray.remote(num_cpus=0)
class Short:
    def ping(self):
        return 1

print("ready", flush=True)
while True:   # a worker process is always starting: the raylet is mid-spawn when the driver dies
    a = Short.remote()
    ray.get(a.ping.remote())
    ray.kill(a)
"""


def _naming(session: str) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if session in line]


def test_no_worker_the_raylet_was_starting_outlives_a_killed_driver():
    # a worker spawned around the driver's death is in a process group of its own and was never
    # seen as the driver's descendant: found by the Ray session it belongs to (its command line)
    proc = subprocess.Popen([sys.executable, "-c", DRIVER_STARTING_WORKERS], cwd=ROOT,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    session = f"_{proc.pid}/"   # Ray names its session folder session_<date>_<time>_<micros>_<driver pid>
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(5)                                # actors come and go
        assert _naming(session)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.time() + 10                  # the watchdog's sweeps, not Ray's own timeouts (30 s+)
        while (left := _naming(session)) and time.time() < deadline:
            time.sleep(0.5)
        assert left == [], "\n".join(left)
    finally:
        for line in _naming(session):
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except OSError:
                pass
