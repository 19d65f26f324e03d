"""`trader run --mode vts` from the command line, rehearsed against the local KIS-protocol server
(`python -m broker.sim`) on the simulator's session clock: credentials from the simulator's env
file, KIS endpoints and session settings from KRT_* variables, an embedded Ray + Serve, real
sockets throughout. The same command with the wall clock and KIS's own URLs trades VTS."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker.journal import Journal
from cluster.trading_loop import free_port

pytestmark = [pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def simulator(tmp_path):
    env_file = tmp_path / ".env.sim"
    # faster than KIS's VTS limits (1 call/s, tokenP once a minute), which are the simulator's defaults
    proc = subprocess.Popen([sys.executable, "-m", "broker.sim", "--env-file", str(env_file), "--today", "2023-06-30",
                             "--cash", "20000000", "--rate-per-s", "50", "--burst", "5", "--token-throttle-s", "1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (env_file.exists() and "KIS_SIM_ADMIN" in env_file.read_text()):
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.time() < deadline, "simulator did not start"
            time.sleep(0.2)
        yield dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_trader_run_vts_rehearsal(simulator, tmp_path):
    journal = tmp_path / "journal.sqlite"
    env = {**os.environ, **simulator,
           "KRT_LIVE__CLOCK": "simulator", "KRT_LIVE__KIS__REST_URL": simulator["KIS_SIM_REST"],
           "KRT_LIVE__KIS__WS_URL": simulator["KIS_SIM_WS"], "KRT_LIVE__KIS__RATE_PER_S": "50",
           "KRT_LIVE__KIS__TOKEN_THROTTLE_S": "1", "KRT_TRADING__SYMBOLS": "005930,000660,005380",
           "KRT_SERVE__AGENTS": "technical", "KRT_SERVE__PORT": str(free_port()), "KRT_JOURNAL": str(journal),
           "KRT_KIS_CACHE_DIR": str(tmp_path / "kis"), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("KRT_CONFIG", None)
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "run", "--mode", "vts", "--days", "3"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "KIS vts at " + simulator["KIS_SIM_REST"] in out and "done: 3 decisions" in out
    for secret in ("KIS_APP_KEY", "KIS_APP_SECRET", "KIS_SIM_ADMIN"):
        assert simulator[secret] not in out  # nothing secret on the console
    j = Journal(journal)
    try:
        days = [r["day"] for r in j.query("SELECT day FROM account ORDER BY day")]
        orders = j.query("SELECT state FROM orders")
    finally:
        j.close()
    # 2023-06-30 (the simulator's last bar) and the three sessions after it
    assert days == ["2023-06-30", "2023-07-03", "2023-07-04", "2023-07-05"]
    assert orders and all(o["state"] == "filled" for o in orders)
