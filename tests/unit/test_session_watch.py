"""The session watch (actors/session_watch.py) on its own: what it judges and what it never does.
Marks come from a scripted feed, time from a manual session clock, the journal is real SQLite; the
loop's order path is recorded (it is the loop's own, exercised in tests/integration/test_intraday_stop.py)."""
from __future__ import annotations

import datetime as dt

from actors.session_watch import SessionWatch
from broker.journal import Journal
from broker.risk_engine import Book, IntradayLossLimit, PositionStop, TradingState
from market.calendar import SEOUL
from market.session import SessionTimes

DAY = dt.date(2023, 5, 3)


class Clock:
    def __init__(self):
        self.t = dt.datetime.combine(DAY, dt.time(9, 0, 30), tzinfo=SEOUL)

    def now(self):
        return self.t

    def sleep(self, seconds):
        self.t += dt.timedelta(seconds=seconds)


class Loop:
    """What the watch uses of a TradingLoop: run id, journal, kill switch, order path, alerts, the
    session's notice fills (counted: the watch journals them at every poll)."""

    def __init__(self, path):
        self.config = type("C", (), {"run_id": "w"})()
        self.journal = Journal(path, run_id="w")
        self.halted = ""
        self.sent, self.alerts = [], []
        self.fill_polls = 0

    def journal_session_fills(self):
        self.fill_polls += 1

    def _send_checked(self, request, book, stamp, blocked):
        self.sent.append((stamp.time(), request.symbol, request.qty, request.client_order_id))
        book.apply(request, book.price(request.symbol))
        return request

    def _alert(self, alert):
        self.alerts.append(alert)


def book() -> Book:
    return Book(day=DAY, cash=1_000_000.0, positions={"005930": 100, "000660": 10},
                last_close={"005930": 70_000.0, "000660": 100_000.0}, previous_close={}, day_start_equity=9_000_000.0)


def feed(script):
    """marks() answers from `script(now)` -> (marks {symbol: (price, exchange time)}, stale {symbol: s})."""
    def read(clock):
        def marks():
            prices, stale = script(clock.now())
            return {"marks": {s: {"price": p, "time": t, "received": 0.0} for s, (p, t) in prices.items()},
                    "stale": stale}
        return marks
    return read


def watch(clock, script, rules) -> SessionWatch:
    return SessionWatch(rules, 60.0, SessionTimes(), clock, read_marks=feed(script)(clock))


def test_a_stop_fires_once_and_the_day_is_watched_to_the_cutoff(tmp_path):
    clock, loop = Clock(), Loop(tmp_path / "j.sqlite")

    def script(now):
        price = 64_000 if now.time() >= dt.time(11, 0) else 70_000      # 005930 falls 8.6% at 11:00
        return {"005930": (price, now), "000660": (100_000, now)}, {}

    sent = watch(clock, script, [PositionStop(max_drop=0.05)]).run(loop, book())
    assert loop.sent == [(dt.time(11, 0, 30), "005930", 100, "w-20230503-005930-STOP")] and len(sent) == 1
    assert clock.now().time() == dt.time(15, 15)                        # watched to the order cutoff
    assert loop.fill_polls > 100           # the session's notice fills journaled at every check (60 s)
    (event,) = loop.journal.intraday_events()
    assert (event["rule"], event["symbol"], event["action"]) == ("position_stop", "005930", "sell 100")
    assert [a.kind.value for a in loop.alerts] == ["intraday_risk"]


def test_a_stale_feed_never_stops_on_an_old_price_it_is_alerted_and_waits(tmp_path):
    """005930's last trade is far under its stop, but its feed has been silent since: no stop while
    it is stale (one feed-stall alert), the stop only once it trades again; a trade from another day
    is no mark either."""
    clock, loop = Clock(), Loop(tmp_path / "j.sqlite")
    yesterday = dt.datetime.combine(DAY - dt.timedelta(days=1), dt.time(15, 30), tzinfo=SEOUL)

    def script(now):
        if now.time() < dt.time(10, 0):
            return {"005930": (50_000, yesterday)}, {}                  # yesterday's print: not a mark
        if now.time() < dt.time(13, 0):
            return {"005930": (50_000, now.replace(hour=10, minute=0))}, {"005930": 120.0}   # stale
        return {"005930": (60_000, now)}, {}                            # trading again, under the stop

    watch(clock, script, [PositionStop(max_drop=0.05)]).run(loop, book())
    assert [s[:2] for s in loop.sent] == [(dt.time(13, 0, 30), "005930")]
    assert [a.kind.value for a in loop.alerts] == ["feed_stall", "intraday_risk"]


def test_the_loss_limit_waits_for_every_held_mark_then_reduces_and_flattens_once(tmp_path):
    clock, loop = Clock(), Loop(tmp_path / "j.sqlite")

    def script(now):
        marks = {"005930": (50_000, now)}                               # 1,000,000 + 5,000,000 + ...
        if now.time() >= dt.time(12, 0):
            marks["000660"] = (90_000, now)                             # ... 900,000: a 23% loss
        return marks, {}

    b = book()
    watch(clock, script, [IntradayLossLimit(max_loss=0.1, flatten=True)]).run(loop, b)
    assert [s[:3] for s in loop.sent] == [(dt.time(12, 0, 30), "000660", 10), (dt.time(12, 0, 30), "005930", 100)]
    assert b.state is TradingState.REDUCING
    events = loop.journal.intraday_events()
    assert [(e["symbol"], e["action"]) for e in events] == [(None, "state REDUCING"), ("000660", "sell 10"),
                                                             ("005930", "sell 100")]
    assert [a.kind.value for a in loop.alerts] == ["intraday_risk", "trading_state", "intraday_risk", "intraday_risk"]


def test_the_kill_switch_sends_nothing(tmp_path):
    clock, loop = Clock(), Loop(tmp_path / "j.sqlite")
    loop.halted = "operator"
    watch(clock, lambda now: ({"005930": (10_000, now)}, {}), [PositionStop(max_drop=0.05)]).run(loop, book())
    assert loop.sent == []


def test_every_poll_journals_the_book_at_its_marks_for_the_dashboard(tmp_path):
    clock, loop = Clock(), Loop(tmp_path / "j.sqlite")

    def script(now):
        if now.time() >= dt.time(11, 0):                               # 005930 falls 8.6%: stopped
            return {"005930": (64_000, now), "000660": (101_000, now)}, {}
        if now.time() >= dt.time(10, 0):                               # 000660's feed goes quiet
            return {"005930": (70_500, now)}, {"000660": 120.0}
        return {"005930": (70_500, now), "000660": (99_000, now)}, {}

    watch(clock, script, [PositionStop(max_drop=0.05)]).run(loop, book())
    polls = loop.journal.session_marks()
    assert len(polls) == 375                                           # every 60 s from 09:01:30 to 15:15
    first = polls[0]
    assert first["at"] == "2023-05-03T09:01:30+09:00" and first["day_start_equity"] == 9_000_000.0
    assert first["marks"] == {"005930": {"qty": 100, "mark": 70_500.0, "reference": 70_000.0},
                              "000660": {"qty": 10, "mark": 99_000.0, "reference": 100_000.0}}
    assert first["equity"] == 1_000_000 + 100 * 70_500 + 10 * 99_000
    quiet = next(p for p in polls if p["at"].startswith("2023-05-03T10:00"))
    assert quiet["marks"]["000660"]["mark"] is None and quiet["equity"] is None   # no P&L on an old price
    last = polls[-1]   # the stop's sell is projected at the last close: 005930 is no longer held
    assert last["marks"] == {"000660": {"qty": 10, "mark": 101_000.0, "reference": 100_000.0}}
    assert last["cash"] == 1_000_000 + 100 * 70_000 and last["equity"] == 8_000_000 + 10 * 101_000
    assert loop.journal.session_marks(newest=2) == polls[-2:]
