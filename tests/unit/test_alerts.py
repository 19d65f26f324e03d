"""Alerts against a real HTTP receiver on 127.0.0.1: the payload each notifier kind sends, the
token bucket with coalesced counts, secrets redacted everywhere, and a receiver that hangs or
answers 500 never blocking notify()."""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading

import pytest

from broker.base import Fill, Side
from broker.kis.ratelimit import TokenBucket
from cluster.alerts import (
    AlertHub,
    AlertKind,
    TelegramNotifier,
    WebhookNotifier,
    alerts_from_settings,
    daily_pnl_alert,
    denial_alert,
    feed_stall_alert,
    fill_alert,
    intraday_risk_alert,
    make_notifier,
    order_alert,
    report_feed_stalls,
    trading_state_alert,
)
from cluster.settings import SettingsError, load_settings
from market.calendar import SEOUL
from tests.alert_receiver import Receiver

BOT_TOKEN = "123456789:AAE-secret-bot-token-xyz"
HOOK_PATH = "/services/T000/B000/sup3rs3cr3tw3bh00k"


def _fill() -> Fill:
    return Fill("c-1", "0000012345", "005930", Side.BUY, 10, 71_000, 106, 0,
                dt.datetime(2023, 6, 1, 9, 0, tzinfo=SEOUL), fill_id="ccld10")


def _events():
    return [order_alert("run-1", "c-1", "005930", Side.BUY, 10, 71_000, "0000012345"),
            fill_alert("run-1", _fill()),
            denial_alert("run-1", "000660", "sell", 3, "price collar: 5.2% from last"),
            trading_state_alert("run-1", "ACTIVE", "REDUCING", "drawdown 8.1%"),
            feed_stall_alert("005930", 42.0),
            daily_pnl_alert("run-1", dt.date(2023, 6, 1), 101_250_000, 1_250_000, fills=4, denials=1),
            intraday_risk_alert("run-1", "position_stop", "005930", "sell 10", "marked 64,000 is -8.57%")]


def test_each_kind_sends_its_payload_to_each_receiver_kind():
    with Receiver() as rx:
        hub = AlertHub([make_notifier("telegram", BOT_TOKEN, chat_id="-1001", api_url=rx.url),
                        make_notifier("slack", rx.url + "/slack" + HOOK_PATH),
                        make_notifier("discord", rx.url + "/discord/api/webhooks/1/tok"),
                        make_notifier("webhook", rx.url + "/generic")], burst=50)
        events = _events()
        for e in events:
            hub.notify(e)
        got = rx.wait_for(4 * len(events))
        hub.close()
    assert len(got) == 28
    telegram = [b for p, b in got if p == f"/bot{BOT_TOKEN}/sendMessage"]
    slack = [b for p, b in got if p.startswith("/slack")]
    discord = [b for p, b in got if p.startswith("/discord")]
    generic = [b for p, b in got if p == "/generic"]
    assert len(telegram) == len(slack) == len(discord) == len(generic) == 7
    assert all(b["chat_id"] == "-1001" and set(b) == {"chat_id", "text", "disable_web_page_preview"} for b in telegram)
    assert {b["text"] for b in telegram} == {b["text"] for b in slack} == {b["content"] for b in discord}
    by_kind = {b["kind"]: b for b in generic}
    assert set(by_kind) == {k.value for k in AlertKind if k is not AlertKind.SUMMARY}
    assert by_kind["fill"]["data"] == {"run_id": "run-1", "client_order_id": "c-1", "broker_order_id": "0000012345",
                                       "fill_id": "ccld10", "symbol": "005930", "side": "buy", "qty": 10,
                                       "price": 71_000, "commission": 106, "tax": 0,
                                       "filled_at": "2023-06-01T09:00:00+09:00"}
    assert "710,000 KRW" in by_kind["fill"]["text"]
    assert by_kind["denial"]["data"]["reason"] == "price collar: 5.2% from last"
    assert by_kind["trading_state"]["data"] == {"run_id": "run-1", "old": "ACTIVE", "new": "REDUCING",
                                                "reason": "drawdown 8.1%"}
    assert by_kind["daily_pnl"]["data"]["pnl_pct"] == pytest.approx(1.25)
    assert "+1,250,000 KRW (+1.25%)" in by_kind["daily_pnl"]["text"]
    assert by_kind["feed_stall"]["data"] == {"feed": "websocket", "symbol": "005930", "silent_s": 42.0}
    assert all(b["source"] == "kis-ray-trader" and dt.datetime.fromisoformat(b["time"]).tzinfo for b in generic)


def test_event_filter_sends_only_the_chosen_kinds():
    with Receiver() as rx:
        hub = AlertHub([make_notifier("webhook", rx.url + "/g")], kinds=["fill", "daily_pnl"], burst=50)
        for e in _events():
            hub.notify(e)
        hub.close()
    assert sorted(b["kind"] for _, b in rx.requests) == ["daily_pnl", "fill"]


def test_token_bucket_try_acquire_never_waits_and_refills_at_its_rate():
    now = [0.0]
    bucket = TokenBucket(rate_per_s=0.5, burst=2, clock=lambda: now[0])
    assert [bucket.try_acquire() for _ in range(3)] == [True, True, False]
    now[0] = 1.0            # half a token back
    assert not bucket.try_acquire()
    now[0] = 2.0            # one token
    assert bucket.try_acquire() and not bucket.try_acquire()
    now[0] = 100.0          # never more than the burst
    assert [bucket.try_acquire() for _ in range(3)] == [True, True, False]


def test_over_the_rate_is_coalesced_into_a_count_and_urgent_kinds_pass():
    now = [0.0]
    with Receiver() as rx:
        hub = AlertHub([WebhookNotifier(rx.url + "/g")], rate_per_min=60, burst=2, idle_poll_s=0.02,
                       clock=lambda: now[0])
        for i in range(10):
            hub.notify(order_alert("run-1", f"c-{i}", "005930", "buy", 1))
        hub.notify(fill_alert("run-1", _fill()))
        # a trading-state change is never rate limited, even with the bucket empty
        hub.notify(trading_state_alert("run-1", "ACTIVE", "HALTED", "drawdown 15%"))
        first = rx.wait_for(3)
        assert [b["kind"] for _, b in first] == ["order", "order", "trading_state"]
        assert hub.stats()["webhook"]["rate_limited"] == {"order": 8, "fill": 1}
        now[0] = 1.5        # one token back: the worker sends the coalesced count on its own
        got = rx.wait_for(4)
        hub.close()
    summary = got[3][1]
    assert summary["kind"] == "summary"
    assert "9 alert(s) over the rate limit not sent (1 fill, 8 order)" in summary["text"]
    assert hub.stats()["webhook"]["sent"] == 4    # the count went out once, not on every idle poll


def test_hung_receiver_costs_notify_nothing_and_drops_are_counted():
    with Receiver(mode="hang") as rx:
        hub = AlertHub([make_notifier("webhook", rx.url + "/g", timeout_s=30)], burst=1000, queue_size=5,
                       idle_poll_s=0.02)
        hub.notify(feed_stall_alert(None, 60))
        assert rx.arrived.wait(10)           # the worker is now stuck inside that request
        done = threading.Event()

        def burst():
            for i in range(200):
                hub.notify(order_alert("run-1", f"c-{i}", "005930", "buy", 1))
            done.set()

        caller = threading.Thread(target=burst)
        caller.start()
        # a liveness bound, not a timing assertion: the receiver holds its request for 30 s, so
        # a notify() that waited on it would still be inside the first call here
        assert done.wait(10) and not rx.release.is_set()
        stats = hub.stats()["webhook"]
        assert stats["queued"] == 1 + 5 and stats["dropped_queue_full"] == 195 and stats["sent"] == 0
        rx.release.set()
        got = rx.wait_for(7)
        hub.close()
    # once the jam clears, a message reports what was lost
    assert len(got) == 7 and any("195 alert(s) dropped: the receiver was too slow" in b["text"] for _, b in got)


def test_failing_receiver_is_counted_and_its_error_is_redacted(caplog):
    with Receiver(mode="500") as rx:
        hub = AlertHub([TelegramNotifier(BOT_TOKEN, "-1001", api_url=rx.url, timeout_s=5)], burst=50)
        with caplog.at_level(logging.DEBUG):
            for e in _events()[:3]:
                hub.notify(e)
            rx.wait_for(3)
            hub.close()
    stats = hub.stats()["telegram"]
    assert stats["failed"] == 3 and stats["sent"] == 0
    assert "HTTP 500" in stats["last_error"]
    # the receiver echoed the URL path (with the token) into its error body: masked everywhere
    logged = caplog.text + stats["last_error"] + repr(hub)
    assert BOT_TOKEN not in logged and "AAE-secret" not in logged
    assert "alert not delivered" in caplog.text


def test_unreachable_webhook_url_is_redacted_in_errors(caplog):
    with Receiver() as rx:
        port = rx.server.server_address[1]
    url = f"http://127.0.0.1:{port}{HOOK_PATH}"   # the receiver is gone: connection refused
    hub = AlertHub([make_notifier("slack", url, timeout_s=2)], burst=5)
    with caplog.at_level(logging.DEBUG):
        hub.notify(denial_alert("run-1", "005930", "buy", 1, "gross cap"))
        hub.close()
    err = hub.stats()["slack"]["last_error"]
    assert hub.stats()["slack"]["failed"] == 1 and "ConnectionError" in err
    for text in (err, caplog.text, repr(hub)):
        assert "sup3rs3cr3tw3bh00k" not in text and url not in text


def test_settings_read_alert_secrets_from_env_only(tmp_path):
    f = tmp_path / "trader.yaml"
    f.write_text("alerts:\n  rate_per_min: 6\n  events: [fill, daily_pnl]\n  notifiers:\n"
                 "    - {kind: telegram, chat_id: '-1001', api_url: 'http://127.0.0.1:9'}\n"
                 "    - {kind: webhook, name: ops, secret_env: OPS_HOOK}\n    - {kind: discord}\n")
    env = {"KRT_ALERT_TELEGRAM_TOKEN": BOT_TOKEN, "OPS_HOOK": "http://127.0.0.1:9" + HOOK_PATH}
    s = load_settings(f, environ=env, dotenv=None)
    tg, ops, discord = s.alerts.notifiers
    assert tg.secret.get_secret_value() == BOT_TOKEN and ops.secret.get_secret_value().endswith(HOOK_PATH)
    assert discord.secret is None and discord.secret_var == "KRT_ALERT_DISCORD_URL"
    shown = repr(s) + json.dumps(s.public_dict())
    assert BOT_TOKEN not in shown and HOOK_PATH not in shown
    hub = alerts_from_settings(s.alerts)      # discord has no secret: skipped, the others built
    assert [n for n in hub.stats()] == ["telegram", "ops"]
    hub.close()

    f.write_text("alerts:\n  notifiers:\n    - {kind: slack, secret: 'http://hooks/x'}\n")
    with pytest.raises(SettingsError, match=r"alerts.notifiers\[0\].secret"):
        load_settings(f, environ={}, dotenv=None)
    f.write_text("alerts:\n  notifiers:\n    - {kind: telegram}\n")
    with pytest.raises(SettingsError, match="chat_id"):
        load_settings(f, environ={}, dotenv=None)
    assert alerts_from_settings(load_settings(None, environ={}, dotenv=None).alerts) is None


def test_silent_symbols_become_one_feed_stall_alert_each():
    from broker.kis.realtime import RealtimeQuotes

    now = [0.0]
    quotes = RealtimeQuotes(clock=lambda: now[0])
    trade = {"MKSC_SHRN_ISCD": "005930", "BSOP_DATE": "20230601", "STCK_CNTG_HOUR": "090000", "STCK_PRPR": "71000",
             "CNTG_VOL": "10", "ACML_VOL": "10", "ASKP1": "71100", "BIDP1": "71000"}
    quotes.on_record("H0STCNT0", trade)
    with Receiver() as rx:
        hub = AlertHub([make_notifier("webhook", rx.url + "/g")], burst=50)
        now[0] = 45.0
        assert report_feed_stalls(quotes, ["005930", "000660"], 30, hub) == {"005930": 45.0, "000660": None}
        assert report_feed_stalls(quotes, ["005930", "000660"], 30, hub) == {}      # once per stall
        got = rx.wait_for(2)
        hub.close()
    texts = sorted(b["text"] for _, b in got)
    assert texts == ["FEED STALL websocket 000660: no data received yet", "FEED STALL websocket 005930: nothing for 45 s"]
