"""The Streamlit dashboard in a real headless Chromium (driven over the DevTools protocol):
it renders the numbers of the journal a real `trader demo` run wrote (local Ray, Serve, actors,
paper broker), MLflow runs and model versions, follows new journal rows without a reload, and
leaves a screenshot as a test artifact."""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from broker.journal import Journal
from cluster.commands.dashboard import streamlit_command

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1600,4000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


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


class Page:
    """A minimal DevTools-protocol client for one tab."""

    def __init__(self, ws):
        self.ws, self.n = ws, 0

    async def call(self, method: str, **params):
        self.n += 1
        await self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def text(self) -> str:
        r = await self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
                            returnByValue=True)
        return r["result"].get("value", "")

    async def wait_for(self, needles: list[str], timeout: float) -> str:
        deadline = time.time() + timeout
        text = ""
        while time.time() < deadline:
            text = await self.text()
            if all(n in text for n in needles):
                return text
            await asyncio.sleep(0.5)
        missing = [n for n in needles if n not in text]
        raise AssertionError(f"page never showed {missing}; it shows:\n{text[:3000]}")


@pytest.fixture()
def dashboard(tmp_path):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (run .ci/system-setup.sh)")
    demo = subprocess.run([sys.executable, "-m", "cluster.cli", "demo", "--days", "25", "--n-symbols", "6",
                           "--out", str(tmp_path / "demo"), "--no-progress"], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=400,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert demo.returncode == 0, demo.stderr[-3000:]
    journal = tmp_path / "demo" / "journal.sqlite"
    run = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    cfg = tmp_path / "trader.yaml"
    cfg.write_text(f"journal: {journal}\nmlflow:\n  tracking_uri: {mlflow_store(tmp_path)}\n"
                   "dashboard:\n  refresh_s: 2\n")
    port = free_port()
    env = {**os.environ, "KRT_CONFIG": str(cfg), "HOME": str(tmp_path)}  # no ~/.streamlit of the user
    proc = subprocess.Popen(streamlit_command(port), env=env, cwd=Path(__file__).resolve().parents[2],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", 90)
        yield {"url": f"http://127.0.0.1:{port}/", "journal": journal, "run": run, "tmp": tmp_path}
    finally:
        stop(proc)


async def _drive(url: str, tmp: Path, journal: Path, expect: list[str], later: dict) -> tuple[str, str, Path]:
    import websockets
    profile = tmp / "chrome-profile"
    profile.mkdir()
    chrome = subprocess.Popen([CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                               "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or chrome.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            await asyncio.sleep(0.2)
        devtools = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{devtools}/json").read())
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with websockets.connect(ws_url, max_size=64 * 2**20) as ws:
            page = Page(ws)
            await page.call("Page.enable")
            await page.call("Emulation.setDeviceMetricsOverride", width=1600, height=4000, deviceScaleFactor=1,
                            mobile=False)
            await page.call("Page.navigate", url=url)
            first = await page.wait_for(expect, 120)
            shot = await page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            # kept outside pytest's rotating tmp dirs: $KRT_TEST_ARTIFACTS or ./test-artifacts
            out = Path(os.environ.get("KRT_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
            out.mkdir(parents=True, exist_ok=True)
            png = out / "dashboard.png"
            png.write_bytes(base64.b64decode(shot["data"]))
            # the loop goes on: a new day in the journal shows up without reloading the page
            run = Journal(journal).runs()[-1]
            j = Journal(journal, run_id=run)
            j.record_account(dt.date.fromisoformat(later["day"]), later["cash"], later["equity"], {})
            j.close()
            second = await page.wait_for([later["day"], f"₩{later['equity']:,.0f}"], 60)
            return first, second, png
    finally:
        stop(chrome)


def test_dashboard_renders_journal_numbers_in_chromium(dashboard):
    db = sqlite3.connect(dashboard["journal"])
    day, cash, equity = db.execute("SELECT day, cash, equity FROM account ORDER BY day DESC LIMIT 1").fetchone()
    n_orders = db.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
    n_fills = db.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
    last_fill = db.execute("SELECT symbol, price FROM fills ORDER BY filled_at DESC, id DESC LIMIT 1").fetchone()
    payload = json.loads(db.execute("SELECT payload FROM decisions ORDER BY day DESC LIMIT 1").fetchone()[0])
    db.close()
    assert equity == pytest.approx(dashboard["run"]["final_equity"])
    expect = [f"₩{equity:,.0f}", f"₩{cash:,.0f}", day, f"Orders (latest {min(n_orders, 200)})",
              f"Fills (latest {min(n_fills, 200)})", f"₩{last_fill[1]:,.0f}", last_fill[0],
              "dqn-trial-7", "dqn_agent", "champion", "Ray dashboard", "MLflow UI"]
    expect += list(payload["agents"])                      # each agent of the ensemble
    for key in ("var", "cvar"):                            # risk figures, when the service reports them
        if isinstance(payload.get("risk", {}).get(key), (int, float)):
            expect.append(f"{payload['risk'][key]:.2%}")
    expect += [f"{p:.2%}" for p in (payload.get("regime") or {}).values()]
    later = {"day": "2099-01-02", "cash": cash, "equity": equity + 1_234_567}
    first, second, png = asyncio.run(_drive(dashboard["url"], dashboard["tmp"], dashboard["journal"], expect, later))
    assert png.stat().st_size > 10_000
    print(f"\ndashboard screenshot: {png}")
    assert "cannot read the journal" not in first
    assert "DeltaGenerator" not in first, "a Streamlit object was echoed onto the page"
