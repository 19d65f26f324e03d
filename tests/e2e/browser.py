"""A real headless Chromium for the page tests (the dashboard, the backtest report), driven
over the DevTools protocol: open a page, read its text, check it for error boxes, screenshot it."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1600,4000"]
# what a broken page shows in its text: a Python traceback, Streamlit's API error, an object echoed
ERROR_MARKS = ("Traceback", "StreamlitAPIException", "DeltaGenerator")
# Streamlit's exception box (st.exception, an error raised by the app) and error boxes (st.error)
ERROR_BOXES = "document.querySelectorAll('[data-testid=\"stException\"], [data-testid=\"stAlertContentError\"]').length"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def artifacts_dir() -> Path:
    """Screenshots are kept outside pytest's rotating tmp dirs: $KRT_TEST_ARTIFACTS or ./test-artifacts."""
    out = Path(os.environ.get("KRT_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    return out


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

    async def evaluate(self, expression: str):
        r = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return r["result"].get("value")

    async def text(self) -> str:
        return await self.evaluate("document.body ? document.body.innerText : ''") or ""

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

    async def screenshot(self, path: Path) -> Path:
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@contextlib.asynccontextmanager
async def chromium_page(profile: Path, width: int = 1600, height: int = 4000):
    """A fresh headless Chromium (its own profile folder) and one page of it."""
    import websockets

    profile.mkdir(parents=True, exist_ok=True)
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
            await page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                            mobile=False)
            yield page
    finally:
        stop(chrome)
