"""KisBroker: the project's Broker interface over the KIS REST client.

* Client order ids live in a local SQLite map (ids.py), written before each send.
* No double orders: when an order's outcome is unknown (timeout, dropped connection, 5xx after
  sending, malformed answer), the day's orders are read first; an order with the same symbol,
  side, quantity, type and price whose ODNO is not already ours is taken as this one. Only when
  two looks (separated by `unknown_check_delay_s`) both read the day's orders and find nothing is
  the order sent again, once. When a look fails the order is UNKNOWN: never sent again, looked up
  by later `find_order` calls. (Assumes nobody else places identical orders on the account the
  same day — documented.) Rate-limit and token refusals were never processed: `not_sent`.
* Fills come from two sources, counted once (broker/kis/reconcile.py FillReconciler, keyed on
  ODNO + cumulative executed quantity, so a fill has the broker fill id `ccld<cum qty>` whichever
  source saw it first): the account's execution notices (`notices`, e.g. the gateway's
  `take_notices`), turned into Fill objects by `notice_fills()` as they arrive, stamped with the
  notice's execution time; and the day's executions over REST (inquire-daily-ccld), read by
  `sync()`, which first takes the notices waiting, then reports what REST shows beyond them (a
  notice that never came) and, where REST's amount differs at the same quantity, the last fill
  again with the same identity at REST's price (REST wins; the journal replaces it).
  `confirm_fills()`, called once the journal has them, marks them reported. Commission and tax
  are computed with the account's CostModel and the dated tax table (KIS reports them only as a
  daily total).
"""
from __future__ import annotations

import datetime as dt
import enum
import hashlib
import logging
import time
from pathlib import Path
from typing import Callable

from broker.base import Broker, Fill, Order, OrderRequest, OrderStatus, OrderType, Side
from broker.kis import orders as tr
from broker.kis.config import Credentials, Environment
from broker.kis.errors import (
    KisAuthError,
    KisBusinessError,
    KisError,
    KisRateLimited,
    KisTokenError,
    KisTransportError,
)
from broker.kis.ids import OrderIdMap
from broker.kis.reconcile import FillReconciler, ReconciledFill
from broker.kis.rest import RestClient
from broker.kis.ws import FillEvent
from market import krx
from market.accounting import CostModel
from market.calendar import SEOUL, TradingCalendar, open_time

log = logging.getLogger(__name__)


class Lookup(enum.Enum):
    """What a look at the day's orders for a lost answer found."""
    FOUND = "found"
    ABSENT = "absent"              # two clean looks, not there: KIS never processed it
    UNREACHABLE = "unreachable"    # a look failed: nothing is known


def today_kst() -> dt.date:
    return dt.datetime.now(SEOUL).date()


class KisBroker(Broker):
    def __init__(self, rest: RestClient, costs: CostModel = CostModel(), calendar: TradingCalendar | None = None,
                 id_map: OrderIdMap | Path | str | None = None, clock: Callable[[], dt.date] = today_kst,
                 lookback_days: int = 7, sleep=time.sleep,
                 notices: Callable[[], list[FillEvent]] | None = None):
        """`notices`: a call that returns the account's execution notices' fills received since the
        last call (actors/gateway.py GatewayRest.take_notices); None: fills come from REST alone."""
        self.rest = rest
        self.notices = notices
        self.costs, self.calendar = costs, calendar
        if not isinstance(id_map, OrderIdMap):
            if id_map is None:
                id_map = order_map_path(rest.env, rest.credentials, rest.cache_dir)
            id_map = OrderIdMap(id_map)
        self.ids = id_map
        self.clock = clock
        self.lookback_days = lookback_days
        self._sleep = sleep
        self._fills: list[Fill] = []
        # (client order id, fill id) → the order's (filled qty, amount) once that fill is in:
        # reported, not yet confirmed
        self._pending_totals: dict[tuple[str, str], tuple[int, int]] = {}
        self._unconfirmed: dict[tuple[str, str], Fill] = {}   # the same key → the fill, until confirmed
        self._reconciler: FillReconciler | None = None   # seeded from the map's confirmed totals on first use
        self._before: dict[str, tuple[int, int]] = {}    # ODNO → its totals before its last reported fill
        self._waiting: list[FillEvent] = []              # notices of an ODNO not (yet) in the map
        self.notice_errors = 0                            # notices of orders that were not ours by the close
        self.resends = 0

    def __repr__(self) -> str:
        return f"KisBroker(env={self.rest.env.name!r})"

    # --- Broker interface ---------------------------------------------------------------
    def submit(self, request: OrderRequest) -> Order:
        """Send an order once. A transport failure never raises: the day's orders are read, and
        the answer is the order found there, a REJECTED order whose reason says it was never sent,
        or an UNKNOWN order when the venue could not be asked (never sent again, only looked up)."""
        if self.ids.get(request.client_order_id):
            found = self.find_order(request.client_order_id)   # already journaled: never send it twice
            assert found is not None
            return found
        day = self.clock().strftime("%Y%m%d")
        now = dt.datetime.now(SEOUL)
        cid = request.client_order_id
        self.ids.intent(cid, day, request.symbol, request.side.value, request.qty,
                        request.order_type.value, request.limit_price, now.isoformat())
        for attempt in range(2):
            try:
                out = tr.cash_order(self.rest, request.side.value, request.symbol, request.qty,
                                    request.limit_price if request.order_type is OrderType.LIMIT else None)
            except KisBusinessError as exc:
                reason = f"[{exc.msg_cd}] {exc.msg1}"
                self.ids.rejected(cid, reason)
                return Order(request, "", OrderStatus.REJECTED, now, reason=reason)
            except (KisRateLimited, KisTokenError, KisAuthError) as exc:
                # refused at KIS's gateway before the order was processed: not sent, and the
                # session goes on (the next decision trades what is still wanted)
                reason = f"not sent: [{exc.msg_cd}] {exc.msg1}".strip()
                self.ids.not_sent(cid, reason)
                return Order(request, "", OrderStatus.REJECTED, now, reason=reason)
            except KisTransportError:
                self.ids.unknown(cid)
                lookup, row = self._reconcile(cid)
                if lookup is Lookup.FOUND:
                    return self._order_from(self.ids.get(cid), row)
                if lookup is Lookup.UNREACHABLE:
                    return self._unknown(cid)
                if attempt == 0:
                    self.resends += 1
                    continue       # looked twice, the venue never got it: one more send is safe
                reason = "not sent: the venue has no such order after two sends and two looks each"
                self.ids.not_sent(cid, reason)
                return Order(request, "", OrderStatus.REJECTED, now, reason=reason)
            self.ids.sent(cid, out.get("ODNO", ""), out.get("KRX_FWDG_ORD_ORGNO", ""))
            return Order(request, out.get("ODNO", ""), OrderStatus.OPEN, now)
        raise AssertionError("unreachable")

    def cancel(self, broker_order_id: str) -> Order:
        row = self.ids.by_odno(broker_order_id)
        if row is None:
            raise KeyError(f"unknown order id {broker_order_id!r}")
        current = self._day_row(row)
        if current is not None and int(current.get("rmn_qty") or 0) > 0:
            try:
                tr.revise_cancel(self.rest, row.get("orgno") or "", broker_order_id, cancel=True)
            except KisBusinessError:
                pass       # already filled/cancelled meanwhile: the state read below tells
            except KisTransportError:
                pass       # outcome unknown: read the state instead of cancelling again
        found = self.find_order(row["client_order_id"])
        assert found is not None
        return found

    def find_order(self, client_order_id: str) -> Order | None:
        """The order's state at the venue; None only for an id this broker never journaled.
        Never sends anything. An order whose answer was lost is matched against the day's orders:
        found, it gets its ODNO; absent from two clean looks, it is settled as never sent; the
        day's orders unreadable, it stays UNKNOWN."""
        row = self.ids.get(client_order_id)
        if row is None:
            return None
        if row["state"] in ("rejected", "not_sent"):
            return Order(_request(row), "", OrderStatus.REJECTED, _ts(row), reason=row["reason"])
        if not row["odno"]:
            lookup, venue_row = self._reconcile(client_order_id)   # answer lost (crash/timeout)
            if lookup is Lookup.UNREACHABLE:
                return self._unknown(client_order_id)
            if lookup is Lookup.ABSENT:
                reason = "not sent: the venue has no such order (the answer was lost before it was processed)"
                self.ids.not_sent(client_order_id, reason)
                return Order(_request(row), "", OrderStatus.REJECTED, _ts(row), reason=reason)
            return self._order_from(self.ids.get(client_order_id), venue_row)
        try:
            venue_row = self._day_row(row)
        except KisTransportError:
            venue_row = None   # it was sent (ODNO known): open as far as anyone can tell now
        return self._order_from(row, venue_row)

    def open_orders(self) -> list[Order]:
        orders = [self.find_order(r["client_order_id"]) for r in self.ids.all(self.clock().strftime("%Y%m%d"))
                  if r["odno"]]
        return [o for o in orders if o is not None and o.status is OrderStatus.OPEN]

    def fills(self) -> list[Fill]:
        return list(self._fills)

    def positions(self) -> dict[str, int]:
        holdings, _ = tr.balance(self.rest)
        return {h["pdno"]: int(h["hldg_qty"]) for h in holdings if int(h.get("hldg_qty") or 0)}

    def cash(self) -> int:
        """Cash after every trade so far settles (prvs_rcdl_excc_amt, D+2), in KRW."""
        _, summary = tr.balance(self.rest)
        return int(float(summary.get("prvs_rcdl_excc_amt") or summary.get("dnca_tot_amt") or 0))

    # --- fills ----------------------------------------------------------------------------
    def notice_fills(self) -> list[Fill]:
        """Fills of our orders that execution notices reported since the last call and that were
        not reported yet (by a notice or REST), stamped with the notice's execution time. A notice
        whose order's ODNO is not in the map yet (its answer still on the way) waits for the next
        call. Nothing is marked here (see `confirm_fills`)."""
        if self.notices is None:
            return []
        try:
            arrived = list(self.notices())
        except KisError as exc:   # the WebSocket session is down: its fills come from REST at the close
            log.warning("execution notices unavailable (%s): fills come from the REST execution list", exc)
            arrived = []
        events, self._waiting = self._waiting + arrived, []
        day = self.clock()
        today = {r["odno"]: r for r in self.ids.all(day.strftime("%Y%m%d")) if r["odno"]}
        new: list[Fill] = []
        for event in events:
            mine = today.get(event.order_no)
            if mine is None:
                self._waiting.append(event)
                continue
            before = self._totals().state().get(event.order_no, (0, 0))
            rf = self._totals().on_notice(event)
            if rf is None:
                continue
            at = dt.datetime.combine(day, dt.datetime.strptime(event.time, "%H%M%S").time(), tzinfo=SEOUL)
            new.append(self._reported(mine, rf, before, at))
        return new

    def sync(self) -> list[Fill]:
        """Executions the venue reports that the journal has not confirmed yet, as Fill objects:
        the notices waiting first, then the REST execution list (REST wins: shares it shows beyond
        the notices are reported, a different amount at the same quantity reports the order's last
        fill again at REST's price).

        Nothing is marked here: `confirm_fills` does that after the journal has the fills, so a
        step that failed in between gets them again from the next `sync` (with the same fill_id),
        and a restarted broker, seeded from the map's confirmed totals, reports them again."""
        self.notice_fills()   # reported fills wait in _unconfirmed, returned below
        if self._waiting:   # by the close every order of ours has its ODNO: these are someone else's
            self.notice_errors += len(self._waiting)
            self._waiting = []
        rows = self._venue_rows()
        ours = {r["odno"]: r for r in self.ids.all() if r["odno"]}
        venue = [r for r in rows if r.get("odno") in ours]
        totals = self._totals()
        before_state = totals.state()
        seen = len(totals.discrepancies)
        for rf in totals.on_rest(venue):
            # KIS reports executions per order, not per trade time: a fill REST alone shows is
            # stamped with the session day it is first seen in (the venue's clock) at the open
            self._reported(ours[rf.order_no], rf, before_state.get(rf.order_no, (0, 0)), open_time(self.clock()))
        for d in totals.discrepancies[seen:]:
            if d.kind != "amount" or d.order_no not in self._before:
                continue
            q0, a0 = self._before[d.order_no]
            dq = d.rest_qty - q0
            if dq <= 0:
                continue
            mine = ours[d.order_no]
            previous = self._unconfirmed.get((mine["client_order_id"], f"ccld{d.rest_qty}")) or next(
                (f for f in reversed(self._fills) if f.broker_order_id == d.order_no
                 and f.fill_id == f"ccld{d.rest_qty}"), None)
            at = previous.filled_at if previous else open_time(self.clock())
            rf = ReconciledFill(d.order_no, mine["symbol"], mine["side"], dq, (d.rest_amt - a0) // dq, d.rest_qty,
                                "rest")
            self._reported(mine, rf, (q0, a0), at)
        # and every fill reported before that the journal has not confirmed (a failed step): the
        # same identity again, so the journal keeps each once
        return list(self._unconfirmed.values())

    def confirm_fills(self, fills: list[Fill]) -> None:
        for fill in fills:
            self._unconfirmed.pop((fill.client_order_id, fill.fill_id), None)
            totals = self._pending_totals.pop((fill.client_order_id, fill.fill_id), None)
            if totals is not None:
                row = self.ids.get(fill.client_order_id)
                if row is not None and totals[0] >= row["filled_qty"]:   # a later fill's totals stay
                    self.ids.filled(fill.client_order_id, *totals)
        self._fills.extend(fills)

    def _totals(self) -> FillReconciler:
        if self._reconciler is None:
            self._reconciler = FillReconciler({r["odno"]: (r["filled_qty"], r["filled_amt"]) for r in self.ids.all()
                                               if r["odno"] and r["filled_qty"]})
        return self._reconciler

    def _reported(self, mine: dict, rf: ReconciledFill, before: tuple[int, int], at: dt.datetime) -> Fill:
        """The Fill of a reconciled fill of our order `mine` (commission and tax from the cost
        model and the dated tax table), remembered with the order's totals after it (the
        reconciler's, exact: REST's amount where REST reported) until the journal confirms it."""
        side = Side(mine["side"])
        gross = rf.qty * rf.price
        commission = krx.commission(gross, self.costs.commission_rate)
        tax = 0
        if side is Side.SELL:
            day = at.astimezone(SEOUL).date()
            settle = self.calendar.settlement_date(day) if self.calendar else _busday(day, 2)
            tax = krx.sell_tax(gross, krx.sell_tax_rate(settle, self.costs.market))
        self._before[rf.order_no] = before
        key = (mine["client_order_id"], rf.fill_id)
        self._pending_totals[key] = self._totals().state()[rf.order_no]
        fill = self._unconfirmed[key] = Fill(mine["client_order_id"], mine["odno"], mine["symbol"], side, rf.qty,
                                             int(rf.price), int(commission), int(tax), at, fill_id=rf.fill_id)
        return fill

    # --- internals ------------------------------------------------------------------------
    def _window(self) -> tuple[dt.date, dt.date]:
        end = self.clock()
        return end - dt.timedelta(days=self.lookback_days), end

    def _venue_rows(self) -> list[dict]:
        start, end = self._window()
        rows, _ = tr.daily_orders(self.rest, start, end)
        return rows

    def _day_row(self, row: dict) -> dict | None:
        day = dt.datetime.strptime(row["day"], "%Y%m%d").date()
        older = (self.clock() - day).days > 90     # KIS: a separate TR beyond three months
        rows, _ = tr.daily_orders(self.rest, day, day, odno=row["odno"], older=older)
        return next((r for r in rows if r["odno"] == row["odno"]), None)

    def _reconcile(self, client_order_id: str) -> tuple[Lookup, dict | None]:
        """Look for an order whose answer was lost; records its ODNO if found. ABSENT only when
        both looks (separated by `unknown_check_delay_s`) read the day's orders and it was not
        there: a look that fails proves nothing, and "could not look" is never "not sent"."""
        row = self.ids.get(client_order_id)
        clean_looks = 0
        for _ in range(2):
            self._sleep(self.rest.env.unknown_check_delay_s)
            try:
                venue_rows = [r for r in self._venue_rows() if r.get("ord_dt", row["day"]) == row["day"]]
            except KisTransportError:
                continue
            clean_looks += 1
            ours = self.ids.known_odnos()
            for r in venue_rows:
                if r["odno"] in ours or r.get("orgn_odno", "").strip("0"):
                    continue
                if (r.get("pdno") == row["symbol"] and r.get("sll_buy_dvsn_cd") == ("01" if row["side"] == "sell" else "02")
                        and int(r.get("ord_qty") or 0) == row["qty"]
                        and r.get("ord_dvsn_cd", "00" if row["order_type"] == "limit" else "01")
                        == ("00" if row["order_type"] == "limit" else "01")
                        and (row["order_type"] != "limit" or int(float(r.get("ord_unpr") or 0)) == row["limit_price"])):
                    self.ids.sent(client_order_id, r["odno"], r.get("ord_gno_brno", ""))
                    return Lookup.FOUND, r
        return (Lookup.ABSENT if clean_looks == 2 else Lookup.UNREACHABLE), None

    def _unknown(self, client_order_id: str) -> Order:
        row = self.ids.get(client_order_id)
        self.ids.unknown(client_order_id)
        return Order(_request(row), "", OrderStatus.UNKNOWN, _ts(row),
                     reason="outcome unknown: the day's orders could not be read; it will not be sent again")

    def _order_from(self, row: dict, venue: dict | None) -> Order:
        req = _request(row)
        if venue is None:
            return Order(req, row["odno"] or "", OrderStatus.OPEN, _ts(row))
        ordered = int(venue.get("ord_qty") or 0)
        filled = int(venue.get("tot_ccld_qty") or 0)
        remaining = int(venue.get("rmn_qty") or 0)
        rejected = int(venue.get("rjct_qty") or 0)
        if filled >= ordered > 0:
            status = OrderStatus.FILLED
        elif rejected and not filled:
            status = OrderStatus.REJECTED
        elif remaining > 0 and venue.get("ord_dt", row["day"]) >= self.clock().strftime("%Y%m%d"):
            status = OrderStatus.OPEN
        elif venue.get("cncl_yn") == "Y":
            status = OrderStatus.PARTIAL if filled else OrderStatus.CANCELLED
        else:
            status = OrderStatus.PARTIAL if filled else OrderStatus.EXPIRED
        return Order(req, row["odno"], status, _ts(row), filled_qty=filled)


def order_map_path(env: Environment, credentials: Credentials, folder: Path) -> Path:
    """The client-order-id map of an environment + account in the session's cache folder (the
    key and account only enter the name through a hash): a restarted loop finds its orders here."""
    digest = hashlib.sha256(f"{env.name}|{credentials.app_key}|{credentials.account}".encode()).hexdigest()[:20]
    return Path(folder) / f"orders-{env.name}-{digest}.sqlite"


def _request(row: dict) -> OrderRequest:
    return OrderRequest(row["client_order_id"], row["symbol"], Side(row["side"]), int(row["qty"]),
                        OrderType(row["order_type"]), row["limit_price"])


def _ts(row: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(row["submitted_at"])


def _busday(day: dt.date, n: int) -> dt.date:
    import numpy as np
    return np.busday_offset(day, n, roll="forward").item()
