"""ExecutionActor: the trading loop. Per bar: snapshot → POST /v1/decide → orders → venue → journal.

Every order passes the risk engine (broker/risk_engine.py: trading state, order value, position
and gross caps, price collar, daily loss, order rate) first: a denied order is journaled with its
reason and never sent. An allowed order is journaled (intent) before it is sent and its broker
answer right after; fills and the end-of-day account follow. A failed decision call stops the loop before any order of that
bar is sent, so a bar is either fully traded or not traded at all.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
import requests

from actors import metrics
from broker.base import Order, OrderRequest, OrderStatus, Side
from broker.execution_algos import AlgoConfig, Plan, plan_for
from broker.journal import DuplicateOrder, Journal
from broker.risk_engine import DEFAULT_PROTECTIONS, Book, RiskEngine, TradingState, build_protections
from broker.venue import open_venue
from cluster import alerts
from market.accounting import BUY, CostModel, orders_for_targets
from market.calendar import TradingCalendar, decision_time
from serving.auth import auth_headers
from strategies import defaults as D

NOTICE_POLL_S = 1.0   # real time: wall seconds between journaling the fills execution notices reported


class DecisionError(RuntimeError):
    """The decision service did not answer with a usable decision."""


@dataclass(frozen=True)
class LoopConfig:
    decide_url: str
    journal_path: str
    run_id: str
    cash: int = D.STARTING_CASH
    venue: str = "paper"
    lookback: int = D.MIN_LOOKBACK
    rebalance_band: float = D.REBALANCE_BAND  # skip trades smaller than this fraction of equity (churn costs)
    costs: CostModel = CostModel()
    timeout_s: float = 30.0
    # vts/live: environment, credentials and clock for KisVenue (passed as actor arguments, never
    # through the environment: a runtime_env shows in the dashboard)
    venue_options: dict = field(default_factory=dict, repr=False)
    # the run's bearer token for /v1/decide (serving/auth.py run_token): the service keys this
    # run's decision state by run_id and accepts it only with this token; never logged.
    # Empty: this machine's service secret (stateless decisions only)
    decide_token: str = field(default="", repr=False)
    # the risk engine's rules (broker/risk_engine.py), as the settings' risk_engine.protections list
    protections: tuple[dict, ...] = DEFAULT_PROTECTIONS
    # settings `alerts` (cluster/settings.py AlertsSettings): who hears about orders, fills,
    # denials, trading-state changes and the daily P&L; None: nobody
    alerts: Any = field(default=None, repr=False)
    # the market state's name in Ray (actors.market_state.market_actor_name): the loop decides by
    # reference — /v1/decide gets as_of, universe and portfolio, and the service reads the bars
    # from that market state. Empty: the loop sends the whole `lookback` snapshot (outside Ray's
    # reach, e.g. a service in another cluster)
    market_name: str = ""
    # real time only (vts/live with a live feed): the intraday rules (settings risk_engine.intraday,
    # broker/risk_engine.py) the session watch (actors/session_watch.py) checks on live marks every
    # `intraday_every_s` seconds of session time until the session's order cutoff. Empty: no watch
    intraday: tuple[dict, ...] = ()
    intraday_every_s: float = 30.0
    session: Any = None   # market.session.SessionTimes of the live loop (the watch's order cutoff)
    # settings `execution` (broker/execution_algos.py): market_open sends each decided order as it
    # is; twap / limit_touch journal it as a parent and work it as children over the session (on
    # the session watch's polls, so real time only)
    execution: AlgoConfig = AlgoConfig()


class TradingLoop:
    def __init__(self, config: LoopConfig, market, calendar_dates: np.ndarray | None = None):
        self.config = config
        self.market = market  # MarketStateActor handle
        calendar = TradingCalendar(calendar_dates) if calendar_dates is not None else None
        options = dict(config.venue_options)
        if config.venue in ("vts", "live") and "rest" not in options:
            # KIS itself: orders and account reads go through the app key's one session, the
            # BrokerGateway the market feed shares (one rate limiter, one token)
            from actors.gateway import GatewayRest

            options["rest"] = GatewayRest(options["environment"], options["credentials"], options.get("cache_dir"))
        self.venue = open_venue(config.venue, cash=config.cash, costs=config.costs, calendar=calendar, **options)
        self.broker = self.venue.broker
        self.journal = Journal(config.journal_path, run_id=config.run_id)
        self.http = requests.Session()
        self.http.headers.update(auth_headers(config.decide_token or None))
        self.risk = RiskEngine(build_protections(config.protections))
        self.last_close: dict[str, float] = {}
        self.equities: deque[float] = deque(maxlen=2)   # the last two closes' equity: the daily loss
        self.halted = ""
        self.stats = {"decisions": 0, "orders": 0, "fills": 0, "rejected": 0, "unknown": 0, "blocked": 0,
                      "denied": 0}
        self.peak_equity = 0.0  # for the drawdown metric
        # built here, in the actor: its sender threads and HTTP sessions do not travel by pickle
        self.alerts = alerts.alerts_from_settings(config.alerts) if config.alerts is not None else None
        self.outbox: list[alerts.Alert] = []   # fill and P&L alerts wait for their journal commit
        self.trading_state = TradingState.ACTIVE
        self.reported = dict(self.stats)        # stats at the last daily summary
        self.plans: list[Plan] = []             # today's parents worked by the execution algorithm
        self.watch = self._session_watch()

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> dict:
        """Let the venue see the first bar (no orders yet) and record the opening account.

        vts/live: the venue reports fills a stopped loop did not journal, and orders the journal
        still shows as working get their state from the broker (reconciliation after a restart)."""
        first = ray.get(self.market.bars.remote())
        fills = self.venue.advance(first["date"], first["bars"])
        self._journal_fills(fills)
        if self.config.venue in ("vts", "live"):
            with self.journal.transaction():
                for row in self.journal.orders(state="open"):
                    order = self.broker.find_order(row["client_order_id"])
                    if order is not None:
                        self.journal.record_order(order)
        self._settle_unknown()
        result = self._record_account(first)
        self._send_alerts()
        return result

    def halt(self, reason: str) -> None:
        """Kill switch: no order is sent after this (fills of orders already sent still arrive)."""
        self.halted = reason or "halted by operator"
        self._alert(alerts.trading_state_alert(self.config.run_id, self.trading_state, "HALTED (kill switch)",
                                               self.halted))

    def close(self) -> None:
        self.venue.close()
        self.journal.close()
        if self.alerts is not None:
            self.alerts.close()

    # --- one bar --------------------------------------------------------------------------
    def step(self) -> dict | None:
        """Decide on the current bar, trade the next one. None when the replay has ended."""
        if ray.get(self.market.remaining.remote()) == 0:
            return None  # no bar left to trade a decision on
        try:
            ray.get(self.market.wait_for_order_window.remote())  # real time: the next session's order time
            # by reference the loop itself needs only the last two closes (order sizes, price collar)
            snap = ray.get(self.market.snapshot.remote(2 if self.config.market_name else self.config.lookback))
        except ray.exceptions.RayTaskError as exc:
            if type(exc.cause).__name__ == "FeedStalled":   # actors/live_market.py: no final bar for days
                self._alert(alerts.feed_stall_alert(None, None, feed=f"daily bars: {exc.cause}"))
            raise
        today = dt.date.fromisoformat(snap["dates"][-1])
        account = self.broker.account()
        decision = self._decide(today, snap, account)
        self.journal.record_decision(today, decision)
        self.stats["decisions"] += 1

        blocked = self._settle_unknown()
        # between decisions the service answers rebalance: false (hold the book): nothing to send
        hold = not decision.get("rebalance", True)
        state = self._trading_state(decision)
        self.plans = []
        submitted = [] if self.halted or hold else self._send_orders(today, snap, decision["targets"], account,
                                                                    blocked, state)
        if self.watch is not None:   # real time: intraday rules and the algorithms' children until the cutoff
            algos = None
            if self.plans:
                from actors.session_algos import SessionAlgos

                algos = SessionAlgos(self, self.plans, self._session_book(snap, account, [], state), blocked)
            submitted += self.watch.run(self, self._session_book(snap, account, submitted, state), algos)
        nxt = self._await_bar()
        fills = self.venue.advance(nxt["date"], nxt["bars"])
        # read everything from the venue first, then write the step in one transaction; the venue
        # is told the fills are journaled only after the commit (a crash in between re-reports them)
        answers = [a for a in (self.broker.find_order(o.client_order_id) for o in submitted) if a is not None]
        with self.journal.transaction():
            self._journal_fills(fills, confirm=False)
            for answer in answers:
                self.journal.record_order(answer)
            result = self._record_account(nxt)
        self.broker.confirm_fills(fills)
        self._send_alerts()
        result.update(orders=len(submitted), fills=len(fills))
        return result

    def intraday_samples(self) -> dict:
        """The session watch's timestamps (bench/realtime_latency.py): per poll and per stop."""
        if self.watch is None:
            return {"samples": [], "stops": []}
        return {"samples": list(self.watch.samples), "stops": list(self.watch.stops)}

    def summary(self) -> dict:
        return {**self.stats, "cash": self.broker.cash(), "positions": self.broker.positions(),
                "halted": self.halted}

    # --- internals ------------------------------------------------------------------------
    def _decide(self, today: dt.date, snap: dict, account) -> dict:
        payload = {"as_of": today.isoformat(), "run_id": self.config.run_id,
                   "portfolio": {"cash": account.cash, "positions": account.positions}}
        if self.config.market_name:
            payload.update(universe=snap["symbols"], market=self.config.market_name)
        else:
            payload["bars"] = snap
        started = time.perf_counter()
        try:
            resp = self.http.post(self.config.decide_url, json=payload, timeout=self.config.timeout_s)
        except requests.RequestException as exc:
            raise DecisionError(f"decision service unreachable at {self.config.decide_url}: {exc}") from exc
        if resp.status_code != 200:
            raise DecisionError(f"decision service answered HTTP {resp.status_code} for {today}: {resp.text[:500]}")
        decision = resp.json()
        if decision.get("as_of") != today.isoformat():
            raise DecisionError(f"decision is for {decision.get('as_of')}, asked for {today}")
        metrics.record_decision(time.perf_counter() - started, "execution")
        risk = metrics.risk_from_report(decision.get("risk"))
        if "var" in risk:
            metrics.record_risk(risk["var"], risk.get("cvar"), risk.get("budget"))
        return decision

    def _await_bar(self) -> dict:
        """The next final bar (the market actor's advance). Meanwhile, in real time, the fills the
        venue reports as they happen (KIS execution notices) are journaled at once, each poll."""
        pending = self.market.advance.remote()
        session_fills = getattr(self.venue, "session_fills", None)
        while session_fills is not None:
            done = ray.wait([pending], timeout=NOTICE_POLL_S)[0]
            self._journal_fills(session_fills())
            if done:
                break
        return ray.get(pending)

    def journal_session_fills(self) -> None:
        """Journal the fills the venue reported during the session so far (the session watch's polls)."""
        session_fills = getattr(self.venue, "session_fills", None)
        if session_fills is not None:
            self._journal_fills(session_fills())

    def _journal_fills(self, fills: list, confirm: bool = True) -> None:
        with self.journal.transaction():
            for fill in fills:
                if self.journal.record_fill(fill):
                    self.stats["fills"] += 1
                    self._alert(alerts.fill_alert(self.config.run_id, fill), after_commit=True)
                    metrics.record_fill(fill.side, fill.qty, self.config.venue)
        if confirm:
            self.broker.confirm_fills(fills)
        if not self.journal.in_transaction:   # committed: heard now (a session's notice fills as they come)
            self._send_alerts()

    def _settle_unknown(self) -> set[str]:
        """Ask the broker about orders whose fate is unknown (an intent with no answer after a
        crash, or a send whose answer was lost and could not be looked up); the symbols of those
        still unknown get no new order this bar, so an order that may be live is never doubled."""
        blocked: set[str] = set()
        for row in self.journal.unsettled():
            order = self.broker.find_order(row["client_order_id"])
            if order is None:
                continue   # never reached the broker (paper: the process died before submit)
            self.journal.record_order(order)
            if order.status is OrderStatus.UNKNOWN:
                blocked.add(row["symbol"])
        return blocked

    def _trading_state(self, decision: dict) -> TradingState:
        """The stricter of the operator's (`trader halt`, read from the journal each bar) and the decision's."""
        control = self.journal.control()
        decided = (decision.get("risk") or {}).get("state")
        state = TradingState.stricter(TradingState(control["state"]), TradingState.from_decision(decided))
        if state is not self.trading_state:
            why = control["reason"] if state.value == control["state"] else f"decision drawdown state {decided}"
            self._alert(alerts.trading_state_alert(self.config.run_id, self.trading_state, state, why))
            self.trading_state = state
        return state

    def _alert(self, alert: alerts.Alert, after_commit: bool = False) -> None:
        """Never blocks and never raises into trading (cluster/alerts.py queues and sends off-thread)."""
        if self.alerts is None:
            return
        if after_commit:
            self.outbox.append(alert)
        else:
            self.alerts.notify(alert)

    def _send_alerts(self) -> None:
        for alert in self.outbox:
            self._alert(alert)
        self.outbox.clear()

    def _send_orders(self, today: dt.date, snap: dict, targets: dict[str, float], account,
                     blocked: set[str] = frozenset(), state: TradingState = TradingState.ACTIVE) -> list:
        symbols = snap["symbols"]
        closes = np.array([np.nan if v is None else v for v in snap["close"][-1]], dtype=float)
        previous = snap["close"][-2] if len(snap["close"]) > 1 else [None] * len(symbols)
        weights = np.array([targets.get(s, 0.0) for s in symbols])
        holdings = np.array([account.positions.get(s, 0) for s in symbols])
        # holdings outside the snapshot's symbols stay untouched: they are not in this decision
        priced = np.where(np.isfinite(closes), closes, 0.0)
        equity = account.cash + float(np.sum(holdings * priced))
        idx, side, qty = orders_for_targets(weights, holdings, account.cash, closes,
                                            min_trade_value=self.config.rebalance_band * equity)
        submitted = []
        stamp = decision_time(today)
        book = Book(day=today, cash=float(account.cash), positions=dict(account.positions),
                    last_close={s: float(c) for s, c in zip(symbols, closes) if np.isfinite(c)},
                    previous_close={s: float(c) for s, c in zip(symbols, previous) if c is not None and c == c},
                    day_start_equity=self.equities[0] if len(self.equities) == 2 else equity, state=state)
        for i, sd, q in zip(idx, side, qty):
            symbol = symbols[i]
            request = OrderRequest(
                client_order_id=f"{self.config.run_id}-{today:%Y%m%d}-{symbol}-{'B' if sd == BUY else 'S'}",
                symbol=symbol, side=Side.BUY if sd == BUY else Side.SELL, qty=int(q))
            if self.config.execution.sliced:
                self.plans.append(self._parent(request, book))
                continue
            order = self._send_checked(request, book, stamp, blocked)
            if order is not None:
                submitted.append(order)
        return submitted

    def _parent(self, request: OrderRequest, book: Book) -> Plan:
        """Journal a decided order as a parent and return its plan; its children pass the risk
        engine one by one as they go out (actors/session_algos.py). A restarted loop finds the
        parent journaled and its plan skips the children already journaled."""
        execution = self.config.execution
        start = self.config.venue_options["clock"].now()
        try:
            self.journal.record_parent(request, start, execution.algo, {**dataclasses.asdict(execution),
                                                                       "start": start.isoformat()})
        except DuplicateOrder:
            if self.config.venue not in ("vts", "live"):
                raise
            # restarted: the schedule keeps the first start (children missed meanwhile go at once)
            row = next(p for p in self.journal.parents() if p["client_order_id"] == request.client_order_id)
            start = dt.datetime.fromisoformat(json.loads(row["params"])["start"])
        cutoff = dt.datetime.combine(start.date(), self.config.session.order_cutoff, tzinfo=start.tzinfo)
        # the last final close is the base of the session's daily price limits (the touch stays inside)
        plan = plan_for(execution, request, start, cutoff, book.last_close.get(request.symbol))
        plan.resume({row["client_order_id"] for row in self.journal.children(request.client_order_id)})
        return plan

    def _send_checked(self, request: OrderRequest, book: Book, stamp: dt.datetime, blocked: set[str],
                      parent_id: str | None = None) -> Order | None:
        """One order through the risk engine, the journal (intent first, under `parent_id` for an
        algorithm's child) and the broker. Returns the order to look up after the bar (working, or
        of unknown outcome), None when it was denied, blocked or refused by the broker (all
        journaled and counted)."""
        symbol = request.symbol
        verdict = self.risk.check(request, book, stamp)
        if not verdict.allowed:
            try:   # journaled with its reason, never sent
                self.journal.record_denied(request, stamp, f"risk {verdict.rule}: {verdict.reason}", parent_id)
            except DuplicateOrder:
                if self.config.venue not in ("vts", "live"):
                    raise
            self.stats["denied"] += 1
            metrics.record_rejection("risk", self.config.venue)
            self._alert(alerts.denial_alert(self.config.run_id, symbol, request.side, request.qty,
                                            f"{verdict.rule}: {verdict.reason}"))
            return None
        try:
            self.journal.record_intent(request, stamp, parent_id)  # journaled before it is sent
        except DuplicateOrder:
            # a restarted live loop re-deciding the same day (its run id is stable): the broker
            # knows by the client order id whether it went out, and never sends it twice
            if self.config.venue not in ("vts", "live"):
                raise
        if symbol in blocked:
            order = Order(request, "", OrderStatus.REJECTED, stamp,
                          reason=f"not sent: an earlier order for {symbol} has an unknown outcome")
            self.journal.record_order(order)
            self.stats["blocked"] += 1
            return None
        order = self.broker.submit(request)
        self.journal.record_order(order)
        self.stats["orders"] += 1
        metrics.record_order(request.side, self.config.venue)
        self._alert(alerts.order_alert(self.config.run_id, request.client_order_id, symbol, request.side,
                                       request.qty, request.limit_price, order.broker_order_id))
        if order.status is OrderStatus.UNKNOWN:
            self.stats["unknown"] += 1
            blocked.add(symbol)
            return order   # looked up again after the bar
        if order.status.done:
            self.stats["rejected"] += 1
            metrics.record_rejection("broker", self.config.venue)
            self._alert(alerts.denial_alert(self.config.run_id, symbol, request.side, request.qty,
                                            f"broker: {order.reason}"))
            return None
        return order

    # --- the session watch (real time) ------------------------------------------------------
    def _session_watch(self):
        if not self.config.intraday and not self.config.execution.sliced:
            return None
        if self.config.venue not in ("vts", "live") or self.config.session is None:
            what = ("risk_engine.intraday rules act on live marks" if self.config.intraday else
                    f"execution.algo {self.config.execution.algo} works orders over the session")
            raise ValueError(f"{what}: they need the real-time loop (--mode vts|live with live.realtime on)")
        from actors.session_watch import SessionWatch
        from broker.risk_engine import build_intraday_rules

        return SessionWatch(build_intraday_rules(self.config.intraday), self.config.intraday_every_s,
                            self.config.session, self.config.venue_options["clock"],
                            read_marks=lambda: ray.get(self.market.marks.remote()))

    def _session_book(self, snap: dict, account, submitted: list, state: TradingState) -> Book:
        """The watch's book: the account at the session's start (settled cash and holdings, marked
        at the last final close) with today's sells projected; a working buy is not a holding yet."""
        symbols = snap["symbols"]
        closes = {s: float(c) for s, c in zip(symbols, snap["close"][-1]) if c is not None and c == c}
        previous = snap["close"][-2] if len(snap["close"]) > 1 else [None] * len(symbols)
        book = Book(day=self.config.venue_options["clock"].now().date(), cash=float(account.cash),
                    positions=dict(account.positions), last_close=closes,
                    previous_close={s: float(c) for s, c in zip(symbols, previous) if c is not None and c == c},
                    day_start_equity=0.0, state=state)
        book.day_start_equity = book.equity()
        for order in submitted:
            if order.request.side is Side.SELL:
                book.apply(order.request, book.price(order.request.symbol))
        return book

    def _record_account(self, bar: dict) -> dict:
        for s, (_, _, _, c) in bar["bars"].items():
            if c is not None and not math.isnan(c):
                self.last_close[s] = c
        positions = self.broker.positions()
        cash = self.broker.cash()
        equity = cash + sum(q * self.last_close.get(s, 0.0) for s, q in positions.items())
        self.journal.record_account(bar["date"], cash, equity, positions, bar.get("benchmark"))
        if self.equities:   # the day's P&L, fills and denials (counts since the last summary)
            self._alert(alerts.daily_pnl_alert(self.config.run_id, bar["date"], round(equity),
                                               round(equity - self.equities[-1]),
                                               fills=self.stats["fills"] - self.reported["fills"],
                                               denials=self.stats["denied"] - self.reported["denied"]),
                        after_commit=True)
        self.reported = dict(self.stats)
        self.equities.append(equity)
        self.peak_equity = max(self.peak_equity, equity)
        if self.peak_equity > 0:
            metrics.record_account(equity, self.peak_equity, self.config.venue)
        return {"date": bar["date"].isoformat(), "equity": equity, "cash": cash}


ExecutionActor = ray.remote(num_cpus=0)(TradingLoop)

