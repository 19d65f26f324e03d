"""The risk engine in the real loop (local Ray, Serve over HTTP, PaperBroker): a denied order is
journaled with its reason, never reaches the broker and is alerted (a real webhook receiver); `trader halt` stops a running loop's
orders from its next bar and `trader resume` lets them out again."""
from __future__ import annotations

import pytest
import ray
from pydantic import SecretStr

from broker.journal import Journal
from cluster.cli import main as trader
from cluster.settings import AlertNotifierSettings, AlertsSettings
from cluster.trading_loop import ReplayConfig, run_replay, start_replay_actors
from tests.alert_receiver import Receiver

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_denied_orders_are_journaled_never_sent_and_alerted(decide_url, tmp_path):
    journal = tmp_path / "journal.sqlite"
    with Receiver() as hook:
        alerts = AlertsSettings(notifiers=[AlertNotifierSettings(kind="webhook", secret=SecretStr(hook.url + "/hook"))],
                                rate_per_min=6000, burst=100)
        config = ReplayConfig(out=tmp_path, days=6, n_symbols=4, run_id="tight", progress=False, alerts=alerts,
                              protections=({"name": "max_order_value", "max_krw": 5_000_000},))
        stats = run_replay(config, decide_url, journal, progress=False)   # close() drains the alert queue
        kinds = [body["kind"] for _, body in hook.requests]
    j = Journal(journal, run_id="tight")
    denied = j.orders(state="denied")
    assert denied and stats["denied"] == len(denied)
    assert all(r["reason"].startswith("risk max_order_value: order value") for r in denied)
    filled_ids = {f["client_order_id"] for f in j.fills()}
    assert not filled_ids & {r["client_order_id"] for r in denied}     # the broker never had them
    # the operator heard of each: one alert per denial, order sent and fill; a P&L line per day
    assert kinds.count("denial") == len(denied) and kinds.count("order") == stats["orders"]
    assert kinds.count("fill") == len(j.fills()) and kinds.count("daily_pnl") == len(j.accounts()) - 1


def test_halt_stops_a_running_loop_and_resume_lifts_it(combined_decide_url, tmp_path, monkeypatch):
    # the combined book re-trades on each weekly decision: a halt has orders to stop
    journal = tmp_path / "journal.sqlite"
    monkeypatch.setenv("KRT_JOURNAL", str(journal))
    loop, market, total = start_replay_actors(ReplayConfig(out=tmp_path, days=16, n_symbols=4, run_id="ops"),
                                              combined_decide_url, journal)
    try:
        ray.get(loop.start.remote())
        j = Journal(journal, run_id="ops")

        def step_until_orders() -> set[str]:
            """Step to the next bar that produces orders; the states its orders were journaled with."""
            before = {r["client_order_id"] for r in j.orders()}
            while ray.get(loop.step.remote()) is not None:
                new = [r for r in j.orders() if r["client_order_id"] not in before]
                if new:
                    return {r["state"] for r in new}
            raise AssertionError("the replay ended before another bar traded")

        assert "denied" not in step_until_orders()                      # the first rebalance goes out
        assert trader(["halt", "--reason", "broker maintenance"]) == 0  # another process, same journal
        assert step_until_orders() == {"denied"}
        assert {r["reason"] for r in j.orders(state="denied")} == {"risk trading_state: trading state HALTED: no orders"}
        assert trader(["resume"]) == 0
        assert "denied" not in step_until_orders()
    finally:
        ray.get(loop.close.remote())
        ray.kill(loop)
        ray.kill(market)
