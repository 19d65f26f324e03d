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
from broker.kis.auth import TokenCache
from broker.kis.broker import KisBroker
from broker.kis.config import Credentials, sim_environment
from broker.kis.rest import KisRest
from cluster.trading_loop import free_port
from tests.alert_receiver import Receiver

pytestmark = [pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def simulator(tmp_path, request):
    env_file = tmp_path / ".env.sim"
    # faster than KIS's VTS limits (1 call/s, tokenP once a minute), which are the simulator's defaults
    extra = getattr(request, "param", [])   # e.g. the intraday stream's seed
    proc = subprocess.Popen([sys.executable, "-m", "broker.sim", "--env-file", str(env_file), "--today", "2023-06-30",
                             "--cash", "20000000", "--rate-per-s", "50", "--burst", "5", "--token-throttle-s", "1",
                             *extra],
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


def rehearsal_env(simulator, tmp_path, journal: Path, symbols: str) -> dict:
    env = {**os.environ, **simulator,
           "KRT_LIVE__CLOCK": "simulator", "KRT_LIVE__KIS__REST_URL": simulator["KIS_SIM_REST"],
           "KRT_LIVE__KIS__WS_URL": simulator["KIS_SIM_WS"], "KRT_LIVE__KIS__RATE_PER_S": "50",
           "KRT_LIVE__KIS__TOKEN_THROTTLE_S": "1", "KRT_TRADING__SYMBOLS": symbols,
           "KRT_SERVE__AGENTS": "technical", "KRT_SERVE__PORT": str(free_port()), "KRT_JOURNAL": str(journal),
           "KRT_KIS_CACHE_DIR": str(tmp_path / "kis"), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("KRT_CONFIG", None)
    return env


def assert_journal_is_the_account(simulator, tmp_path, fills: list[dict]) -> None:
    """The journal's fills give the simulator's account, to the share and the won."""
    env = sim_environment(simulator["KIS_SIM_REST"], simulator["KIS_SIM_WS"])
    cred = Credentials.from_env(simulator, dotenv=None)
    rest = KisRest(env, cred, TokenCache(env, cred, cache_dir=tmp_path / "kis"))
    account = KisBroker(rest, id_map=tmp_path / "check-ids.sqlite")
    held: dict[str, int] = {}
    cash = 20_000_000
    for f in fills:
        sign = 1 if f["side"] == "buy" else -1
        held[f["symbol"]] = held.get(f["symbol"], 0) + sign * f["qty"]
        cash -= sign * f["qty"] * f["price"] + f["commission"] + f["tax"]
    assert {s: q for s, q in held.items() if q} == account.positions()
    assert cash == account.cash()


def test_trader_run_vts_rehearsal(simulator, tmp_path):
    journal = tmp_path / "journal.sqlite"
    env = rehearsal_env(simulator, tmp_path, journal, "005930,000660,005380")
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
        fills = j.query("SELECT symbol, side, qty, price, commission, tax, filled_at FROM fills")
    finally:
        j.close()
    # 2023-06-30 (the simulator's last bar) and the three sessions after it
    assert days == ["2023-06-30", "2023-07-03", "2023-07-04", "2023-07-05"]
    assert orders and all(o["state"] == "filled" for o in orders)
    # every fill came from its execution notice, in the session: stamped with the order's session
    # time (live.order_time 09:00:30; a fill only the REST list brought would read the open, 09:00)
    assert fills and {f["filled_at"][11:19] for f in fills} == {"09:00:30"}
    assert_journal_is_the_account(simulator, tmp_path, fills)


REALTIME_YAML = """\
live:
  realtime: true
  feed_silence_s: 30
execution:
  algo: twap
  twap_window_min: 60
  twap_children: 4
risk_engine:
  intraday_every_s: 30
  intraday:
    - {name: position_stop, max_drop: 0.01}
alerts:
  rate_per_min: 6000
  burst: 200
  notifiers:
    - {kind: webhook, name: rehearsal, secret_env: REHEARSAL_HOOK_URL}
"""


@pytest.mark.parametrize("simulator", [["--intraday-seed", "11", "--intraday-step-s", "30"]], indirect=True)
def test_trader_run_vts_rehearses_a_realtime_session(simulator, tmp_path):
    """issue 13's rehearsal: the simulator streams its SYNTHETIC session; `trader run --mode vts`
    works each decided order as TWAP children, a 1 % stop fires on live marks, fills arrive by
    execution notice during the session, and the local receiver hears every step."""
    journal = tmp_path / "journal.sqlite"
    (tmp_path / "trader.yaml").write_text(REALTIME_YAML)
    with Receiver() as hook:
        env = {**rehearsal_env(simulator, tmp_path, journal, "005930,000660,005380,005490,035420"),
               "KRT_CONFIG": str(tmp_path / "trader.yaml"), "REHEARSAL_HOOK_URL": hook.url + "/hook"}
        r = subprocess.run([sys.executable, "-m", "cluster.cli", "run", "--mode", "vts", "--days", "3"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=900)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-3000:]
        received = [body for _, body in hook.wait_for(1)]
    assert hook.url not in out and "done: 3 decisions" in out    # the receiver's URL is a secret
    j = Journal(journal)
    try:
        parents, orders, fills, events = j.parents(), j.orders(), j.fills(), j.intraday_events()
        children = {c["client_order_id"] for p in parents for c in j.children(p["client_order_id"])}
        polls = j.session_marks()
    finally:
        j.close()
    stops = [o for o in orders if o["client_order_id"].endswith("-STOP")]
    assert parents and all(p["algo"] == "twap" for p in parents)
    # every order is a TWAP child or a stop; a parent went out as its 4 children
    assert {o["client_order_id"] for o in orders} == children | {o["client_order_id"] for o in stops}
    assert any(c.endswith("-T04") for c in children)
    assert stops, "the 1% stop must fire in these sessions (pick another seed)"
    assert {e["client_order_id"] for e in events} == {o["client_order_id"] for o in stops}
    assert all(o["state"] == "filled" for o in orders)
    assert polls and polls[-1]["at"][11:19] == "15:15:00"               # the dashboard's live marks
    kinds = [b["kind"] for b in received]
    assert {"order", "fill", "intraday_risk", "daily_pnl"} <= set(kinds), kinds
    # fills by execution notice, journaled and alerted during the session: each TWAP child's fill is
    # heard before its parent's next child goes out (REST alone would bring them all at the close)
    heard: dict[tuple, int] = {}   # (kind, client order id) → when it was first heard
    for k, b in enumerate(received):
        heard.setdefault((b["kind"], b["data"].get("client_order_id")), k)
    followed = [c for c in children if (c[:-2] + f"{int(c[-2:]) + 1:02d}") in children]
    assert followed and all(heard[("fill", c)] < heard[("order", c[:-2] + f"{int(c[-2:]) + 1:02d}")]
                            for c in followed), received
    assert_journal_is_the_account(simulator, tmp_path, fills)
