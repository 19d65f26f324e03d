"""What a person sees from `trader demo`: progress lines and the summary, not Ray's or Serve's logs
(those go to OUT/ray.log), and a summary whose numbers are the run's own. Runs the command as a
process, as a person would (its own embedded Ray)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CASH = 30_000_000


def test_demo_is_quiet_and_its_summary_adds_up(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "cluster.cli", "demo", "--days", "6", "--n-symbols", "4", "--cash", str(CASH),
           "--out", str(out), "--no-rl-champions", "--json"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["KRT_MLFLOW_DIR"] = str(tmp_path / "mlflow")   # the embedded store of a fresh checkout
    done = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    for step in ("starting Ray", "deploying the decision service", "replaying 6 trading days", "shutting down"):
        assert step in done.stderr
    for noise in ("INFO", "(raylet)", "Started Serve", "Connecting to existing Serve", "graceful_shutdown",
                  "Token authentication"):
        assert noise not in done.stdout + done.stderr, noise
    assert "Started Serve" in (out / "ray.log").read_text()  # what was hidden is kept

    printed = json.loads(done.stdout)  # progress lines go to stderr: stdout is the JSON alone
    metrics = json.loads((out / "metrics.json").read_text())
    summary = printed["summary"]
    assert summary["rows"][0]["total_return"] == metrics["total_return"]
    assert [r["label"] for r in summary["rows"]] == ["demo", "KOSPI200", "equal-weight"]
    # P&L per symbol (journal fills + final positions at the last close) adds up to the account
    pnl = sum(s["pnl"] for s in summary["trades"]["by_symbol"])
    assert abs(pnl - (metrics["final_equity"] - CASH)) <= len(summary["trades"]["by_symbol"])
    assert summary["trades"]["commission"] + summary["trades"]["tax"] > 0

    # the demo is an MLflow run in the embedded store: inputs with their hashes, metrics, files
    from mlflow.tracking import MlflowClient
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    run = c.get_run(printed["mlflow_run_id"])
    assert run.info.status == "FINISHED" and c.get_experiment(run.info.experiment_id).name == "demos"
    prices = ROOT / "data" / "kr_stocks_daily.parquet"
    assert run.data.params["data.prices.sha256"] == hashlib.sha256(prices.read_bytes()).hexdigest()
    assert run.data.params["cash"] == str(CASH) and run.data.params["span"] == f"{summary['start']}..{summary['end']}"
    assert run.data.metrics["total_return"] == pytest.approx(metrics["total_return"], abs=1e-6)  # json: rounded
    assert {"equity.png", "equity.csv", "metrics.json", "journal.sqlite", "summary.txt"} <= {
        a.path for a in c.list_artifacts(run.info.run_id)}


def test_trader_run_is_quiet_like_the_demo(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    journal = tmp_path / "loop" / "journal.sqlite"
    env = {**os.environ, "KRT_JOURNAL": str(journal), "KRT_SERVE__PORT": str(port), "KRT_SERVE__AGENTS": "technical",
           "KRT_TRADING__SYMBOLS": "005930,000660,005380", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("KRT_CONFIG", None)
    done = subprocess.run([sys.executable, "-m", "cluster.cli", "run", "--mode", "paper", "--days", "3"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "done: 3 decisions" in done.stdout
    for step in ("starting Ray", "deploying the decision service", "trading loop (paper)", "shutting down"):
        assert step in done.stderr
    for noise in ("INFO", "(raylet)", "Started Serve", "graceful_shutdown", "Token authentication"):
        assert noise not in done.stdout + done.stderr, noise
    assert "Serve" in (journal.parent / "ray.log").read_text()   # what was hidden is kept
