"""The Streamlit dashboard in a real headless Chromium (driven over the DevTools protocol):
it renders the numbers of the journal a real `trader demo` run wrote (local Ray, Serve, actors,
paper broker), MLflow runs and model versions, follows new journal rows (a new day, a session's
live marks and P&L) without a reload, and leaves a screenshot as a test artifact."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from broker.journal import Journal
from cluster.commands.dashboard import streamlit_command
from market.data import stock_names
from tests.e2e.browser import CHROMIUM, ERROR_BOXES, ERROR_MARKS, artifacts_dir, chromium_page, stop, wait_http

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_store(tmp: Path) -> str:
    """A real MLflow sqlite store with one training run and a registered model version."""
    import mlflow
    from mlflow.tracking import MlflowClient
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("dqn-trading")
    with mlflow.start_run(run_name="dqn-trial-7") as run:
        mlflow.log_params({"lr": 0.0005, "gamma": 0.99})
        mlflow.log_metric("val_sharpe", 1.234)
    client = MlflowClient(uri)
    client.create_registered_model("dqn_agent")
    mv = client.create_model_version("dqn_agent", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("dqn_agent", "champion", mv.version)
    mlflow.set_tracking_uri(None)
    return uri


@pytest.fixture()
def dashboard(tmp_path):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (run .ci/system-setup.sh)")
    store = mlflow_store(tmp_path)
    # the demo is tracked into the same store the dashboard reads
    demo = subprocess.run([sys.executable, "-m", "cluster.cli", "demo", "--days", "25", "--n-symbols", "6",
                           "--out", str(tmp_path / "demo"), "--no-progress", "--json"],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=400,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_TRACKING_URI": store})
    assert demo.returncode == 0, demo.stderr[-3000:]
    demo_run_id = json.loads(demo.stdout)["mlflow_run_id"]
    assert demo_run_id, demo.stderr[-3000:]
    journal = tmp_path / "demo" / "journal.sqlite"
    run = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    cfg = tmp_path / "trader.yaml"
    cfg.write_text(f"journal: {journal}\nmlflow:\n  tracking_uri: {store}\n"
                   "dashboard:\n  refresh_s: 2\n")
    port = free_port()
    env = {**os.environ, "KRT_CONFIG": str(cfg), "HOME": str(tmp_path)}  # no ~/.streamlit of the user
    proc = subprocess.Popen(streamlit_command(port), env=env, cwd=Path(__file__).resolve().parents[2],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", 90)
        yield {"url": f"http://127.0.0.1:{port}/", "journal": journal, "run": run, "tmp": tmp_path,
               "demo_run_id": demo_run_id}
    finally:
        stop(proc)


async def _drive(url: str, tmp: Path, journal: Path, expect: list[str], later: dict) -> tuple[str, str, Path, dict]:
    async with chromium_page(tmp / "chrome-profile") as page:
        await page.call("Page.navigate", url=url)
        first = await page.wait_for(expect, 120)
        checks = {"error_boxes": await page.evaluate(ERROR_BOXES),
                  "deploy_buttons": await page.evaluate(
                      "document.querySelectorAll('[data-testid=\"stAppDeployButton\"]').length"),
                  "charts": await page.evaluate("document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]').length")}
        png = await page.screenshot(artifacts_dir() / "dashboard.png")
        # the loop goes on: a new day in the journal shows up without reloading the page
        run = Journal(journal).runs()[-1]
        j = Journal(journal, run_id=run)
        j.record_account(dt.date.fromisoformat(later["day"]), later["cash"], later["equity"], {})
        # and the next session's watch journals its live marks: the page shows them as they come
        marks = {later["symbol"]: {"qty": 10, "mark": 51_200.0, "reference": 50_000.0}}
        at = dt.datetime.fromisoformat(f"{later['day']}T10:15:00+09:00")
        j.record_marks(at, later["cash"], later["equity"] + 12_000, later["equity"], marks)
        j.close()
        second = await page.wait_for([later["day"], f"₩{later['equity']:,.0f}", "marks at 10:15:00",
                                      "P&L at live marks", "₩51,200", "2.40%", "₩12,000"], 60)
        return first, second, png, checks


def test_dashboard_renders_journal_numbers_in_chromium(dashboard):
    db = sqlite3.connect(dashboard["journal"])
    day, cash, equity, positions = db.execute(
        "SELECT day, cash, equity, positions FROM account ORDER BY day DESC LIMIT 1").fetchone()
    n_orders = db.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
    n_fills = db.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
    last_fill = db.execute("SELECT symbol, price FROM fills ORDER BY filled_at DESC, id DESC LIMIT 1").fetchone()
    payload = json.loads(db.execute("SELECT payload FROM decisions ORDER BY day DESC LIMIT 1").fetchone()[0])
    db.close()
    assert equity == pytest.approx(dashboard["run"]["final_equity"])
    names = stock_names()
    expect = [f"₩{equity:,.0f}", f"₩{cash:,.0f}", day, f"Orders (latest {min(n_orders, 200)})",
              f"Fills (latest {min(n_fills, 200)})", f"₩{last_fill[1]:,.0f}", last_fill[0], names[last_fill[0]],
              "dqn-trial-7", "dqn_agent", "champion", "Ray dashboard", "MLflow UI",
              "demos", dashboard["demo_run_id"], "This journal's run in MLflow", "both start at 100"]
    held = [s for s, q in json.loads(positions).items() if q > 0]
    expect += [names[s] for s in held]                      # positions show the stock names (Hangul)
    expect += list(payload["agents"])                      # each agent of the ensemble
    for key in ("var", "cvar"):                            # risk figures, when the service reports them
        if isinstance(payload.get("risk", {}).get(key), (int, float)):
            expect.append(f"{payload['risk'][key]:.2%}")
    expect += [f"{p:.2%}" for p in (payload.get("regime") or {}).values()]
    later = {"day": "2099-01-02", "cash": cash, "equity": equity + 1_234_567, "symbol": last_fill[0]}
    first, second, png, checks = asyncio.run(_drive(dashboard["url"], dashboard["tmp"], dashboard["journal"], expect,
                                                    later))
    assert png.stat().st_size > 10_000
    print(f"\ndashboard screenshot: {png}")
    assert "cannot read the journal" not in first
    for mark in ERROR_MARKS:   # no traceback, no Streamlit error, no object echoed onto the page
        assert mark not in first + second, mark
    assert checks == {"error_boxes": 0, "deploy_buttons": 0, "charts": checks["charts"]} and checks["charts"] >= 3, \
        checks
    assert "Deploy" not in first
