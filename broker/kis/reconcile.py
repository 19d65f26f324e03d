"""Fills from two sources, counted once: execution notices (WebSocket, fast, can be missed) and
the REST execution list (inquire-daily-ccld, authoritative, polled).

Key: KIS order number + cumulative filled quantity, the same key as KisBroker.sync's
`fill_id = f"ccld{cum qty}"` — a fill is "order 0000012345 reached 7 shares". Rules:
* a notice (broker/kis/ws.py FillEvent) adds its quantity to what is known of its order and
  reports one fill at once (`source="notice"`); a notice that arrives after REST already
  reported its shares adds nothing;
* a REST row reports the order's totals (tot_ccld_qty, tot_ccld_amt). REST wins: quantity it
  shows beyond what the notices gave is a fill a notice missed (`source="rest"`, priced from
  the amounts); an amount that differs at the same quantity is a price correction (the state
  takes REST's numbers, and a `Discrepancy` names the order); REST showing *less* than the
  notices is only a REST row that lags, kept as a discrepancy until it catches up, never a
  negative fill;
* the same notice delivered twice (identical order, quantity, price and time, e.g. a resend after
  a reconnect) counts once. Dropping a real twin of it costs nothing: REST recovers it.

`state()` / `FillReconciler(state)` carry what was already reported across a restart (e.g. from
the order-id map's filled_qty/filled_amt), so nothing reported is reported again.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from broker.kis.ws import FillEvent


@dataclass(frozen=True)
class ReconciledFill:
    order_no: str
    symbol: str
    side: str            # "buy" | "sell"
    qty: int             # shares in this fill
    price: int           # KRW per share (REST: the average of the shares it adds)
    cum_qty: int         # the order's filled quantity after this fill
    source: str          # "notice" | "rest"

    @property
    def fill_id(self) -> str:
        return f"ccld{self.cum_qty}"


@dataclass(frozen=True)
class Discrepancy:
    order_no: str
    kind: str            # "amount" (REST's price differs; REST taken) | "rest_behind" (REST lags the notices)
    notice_qty: int
    notice_amt: int
    rest_qty: int
    rest_amt: int


@dataclass
class _OrderState:
    qty: int = 0          # reported, from either source
    amt: int = 0
    notice_qty: int = 0   # what the notices alone add up to (a late notice REST already covered adds nothing)
    seen: set[tuple[int, int, str]] = field(default_factory=set)   # (qty, price, time) of notices taken


class FillReconciler:
    def __init__(self, state: dict[str, tuple[int, int]] | None = None):
        """`state`: order no → (filled qty, filled amount KRW) already reported."""
        self._orders: dict[str, _OrderState] = {o: _OrderState(q, a, q) for o, (q, a) in (state or {}).items()}
        self.discrepancies: list[Discrepancy] = []

    def __repr__(self) -> str:
        return f"FillReconciler(orders={len(self._orders)}, discrepancies={len(self.discrepancies)})"

    def state(self) -> dict[str, tuple[int, int]]:
        return {o: (s.qty, s.amt) for o, s in self._orders.items()}

    def on_notice(self, event: FillEvent) -> ReconciledFill | None:
        """The fill this notice reports, or None when it was already counted."""
        s = self._orders.setdefault(event.order_no, _OrderState())
        key = (event.qty, event.price, event.time)
        if key in s.seen:
            return None
        s.seen.add(key)
        s.notice_qty += event.qty
        if s.notice_qty <= s.qty:       # REST already reported these shares (the notice came late)
            return None
        dq = s.notice_qty - s.qty       # all of it, or the part REST had not seen
        s.qty, s.amt = s.notice_qty, s.amt + dq * event.price
        return ReconciledFill(event.order_no, event.symbol, event.side, dq, event.price, s.qty, "notice")

    def on_rest(self, rows: list[dict]) -> list[ReconciledFill]:
        """Fills the REST execution rows show that no notice reported (REST wins on totals)."""
        out: list[ReconciledFill] = []
        for row in rows:
            order_no = str(row.get("odno") or "")
            if not order_no:
                continue
            rest_qty = int(row.get("tot_ccld_qty") or 0)
            rest_amt = int(float(row.get("tot_ccld_amt") or 0))
            s = self._orders.setdefault(order_no, _OrderState())
            if rest_qty > s.qty:
                dq, da = rest_qty - s.qty, rest_amt - s.amt
                side = "sell" if row.get("sll_buy_dvsn_cd") == "01" else "buy"
                out.append(ReconciledFill(order_no, str(row.get("pdno", "")), side, dq, da // dq, rest_qty, "rest"))
                s.qty, s.amt = rest_qty, rest_amt
            elif rest_qty == s.qty and rest_amt != s.amt and rest_qty:
                self.discrepancies.append(Discrepancy(order_no, "amount", s.qty, s.amt, rest_qty, rest_amt))
                s.amt = rest_amt
            elif rest_qty < s.qty:
                self.discrepancies.append(Discrepancy(order_no, "rest_behind", s.qty, s.amt, rest_qty, rest_amt))
        return out
