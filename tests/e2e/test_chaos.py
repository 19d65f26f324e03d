"""`trader chaos`: a short fault campaign on the real loop (real Ray, Serve over HTTP, the KIS
client against the simulator over sockets) ends with nothing lost, doubled or different."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_short_campaign_loses_and_doubles_nothing(tmp_path):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "chaos", "--sessions", "4", "--seed", "3",
                        "--kill-every", "2", "--fault-every", "0.3", "--out", str(tmp_path)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    # the command's last line (Ray may print a shutdown notice of its own after it)
    last = next((line for line in reversed(r.stdout.splitlines()) if line.startswith("orders ")), "")
    assert last.startswith("orders ") and last.endswith(
        "lost 0, duplicated 0, fills lost 0, position diff 0, cash diff 0"), out[-3000:]
    assert r.returncode == 0, out[-3000:]
    summary = json.loads((tmp_path / "chaos.json").read_text())
    assert int(last.split()[1].rstrip(",")) > 0                      # it traded
    assert sum(summary["kills"].values()) >= 1 and summary["segments"] >= 2   # and was killed and restarted
    assert sum(summary["faults"].values()) >= 4
