"""The risk engine: every order is checked here before it is journaled as sent.

NautilusTrader's RiskEngine is the model: a pre-trade check between the strategy and the broker,
with a trading state (ACTIVE / REDUCING / HALTED) and limits per order. Each rule is a small
plug-in (freqtrade's `IProtection` is the model for the shape), built by name from the settings'
`risk_engine.protections` list, so a deployment chooses its rules without code:

    risk_engine:
      protections:
        - {name: max_order_value, max_krw: 30000000}
        - {name: max_position, max_fraction: 0.25}

The trading state is the stricter of the operator's (`trader halt` / `trader resume`, kept in the
journal so it survives a restart) and the decision's: a decision whose drawdown state is HALTED
targets a flat book, so at order level it means REDUCING (the sells that flatten the book go out,
no buy does); only the operator's HALTED stops every order. The rules are a backstop behind the
decision's own sizing, with defaults no valid decision reaches, so `trader check-parity` still
finds the served loop trading what the backtest trades; when one fires, the loop's `denied`
count and the journal say so. A rule sees the book *as projected*
after the orders it already allowed this bar (sells are checked first, as they are sent), so the
exposure limits hold for the bar's orders together.

A denied order never reaches the broker; the loop journals it with state `denied` and the reason.

Intraday rules (`IntradayRule`, settings `risk_engine.intraday`) are the other kind of plug-in:
not a check of an order the loop wants to send, but a look at the book marked at live last-trade
prices during the session, which answers with actions — a trading-state change, a sell. They are
pure functions of (book, live marks, time); the loop's session watch (actors/session_watch.py)
reads the marks, remembers what already fired today and sends each sell through `RiskEngine.check`
like any other order:

    risk_engine:
      intraday:
        - {name: intraday_loss_limit, max_loss: 0.03, flatten: false}
        - {name: position_stop, max_drop: 0.07}

A symbol without a fresh mark (no trade yet today, or its feed stale) is never judged on an older
price: a position stop skips it, and the loss limit waits until every held name is marked.
Plain Python: no Ray, no I/O.
"""
from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar

from broker.base import OrderRequest, OrderType, Side
from market import krx


class TradingState(str, Enum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"   # only orders that shrink a position
    HALTED = "HALTED"       # no order at all

    @classmethod
    def stricter(cls, *states: "TradingState") -> "TradingState":
        order = [cls.ACTIVE, cls.REDUCING, cls.HALTED]
        return max(states, key=order.index)

    @classmethod
    def from_decision(cls, state: str | None) -> "TradingState":
        """The order-level state a decision's drawdown state implies (see the module doc): its
        REDUCING targets are already sized down by the pipeline, so they pass as they are."""
        return cls.REDUCING if state == "HALTED" else cls.ACTIVE


@dataclass
class Book:
    """What the rules look at: the account as projected after the orders allowed so far."""
    day: dt.date
    cash: float
    positions: dict[str, int]
    last_close: Mapping[str, float]          # the decision's reference prices
    previous_close: Mapping[str, float]      # the close before it (base of the KRX daily limit)
    day_start_equity: float                  # equity at the previous close (for the daily loss)
    state: TradingState = TradingState.ACTIVE

    def price(self, symbol: str) -> float:
        return float(self.last_close.get(symbol) or 0.0)

    def equity(self) -> float:
        return self.cash + sum(q * self.price(s) for s, q in self.positions.items())

    def gross(self) -> float:
        return sum(q * self.price(s) for s, q in self.positions.items())

    def apply(self, order: OrderRequest, price: float) -> None:
        signed = order.qty if order.side is Side.BUY else -order.qty
        self.positions[order.symbol] = self.positions.get(order.symbol, 0) + signed
        self.cash -= signed * price


def reference_price(order: OrderRequest, book: Book) -> float:
    """The price an order is judged at: its limit, else the last close (a market order's best guess)."""
    if order.order_type is OrderType.LIMIT and order.limit_price:
        return float(order.limit_price)
    return book.price(order.symbol)


def reduces(order: OrderRequest, book: Book) -> bool:
    """Does the order only shrink a position (a sell of at most what is held)?"""
    return order.side is Side.SELL and order.qty <= book.positions.get(order.symbol, 0)


class Protection:
    """One pre-trade rule. `check` returns the reason to deny, or None to allow."""
    name: ClassVar[str]

    def check(self, order: OrderRequest, book: Book, now: dt.datetime) -> str | None:
        raise NotImplementedError

    def allowed(self, order: OrderRequest, now: dt.datetime) -> None:
        """Called for each order the engine lets through (rules with memory, e.g. a throttle)."""


@dataclass
class TradingStateGuard(Protection):
    """HALTED: nothing; REDUCING: only orders that shrink a position. Always on."""
    name: ClassVar[str] = "trading_state"

    def check(self, order, book, now):
        if book.state is TradingState.HALTED:
            return "trading state HALTED: no orders"
        if book.state is TradingState.REDUCING and not reduces(order, book):
            return "trading state REDUCING: only orders that shrink a position"
        return None


@dataclass
class MaxOrderValue(Protection):
    max_krw: float = 50_000_000
    name: ClassVar[str] = "max_order_value"

    def check(self, order, book, now):
        value = order.qty * reference_price(order, book)
        if value > self.max_krw:
            return f"order value {value:,.0f} KRW above the limit {self.max_krw:,.0f}"
        return None


@dataclass
class MaxPosition(Protection):
    """Position value after the fill, as a fraction of equity (buys only: a sell never grows it)."""
    max_fraction: float = 0.25
    name: ClassVar[str] = "max_position"

    def check(self, order, book, now):
        if order.side is not Side.BUY:
            return None
        equity = book.equity()
        after = (book.positions.get(order.symbol, 0) + order.qty) * reference_price(order, book)
        if equity <= 0 or after > self.max_fraction * equity:
            return (f"{order.symbol} would be {after / equity:.1%} of equity after the fill, above "
                    f"{self.max_fraction:.0%}" if equity > 0 else "no equity")
        return None


@dataclass
class MaxGross(Protection):
    """Gross exposure after the fill, as a fraction of equity (long only: > 1 is leverage)."""
    max_fraction: float = 1.0
    name: ClassVar[str] = "max_gross"

    def check(self, order, book, now):
        if order.side is not Side.BUY:
            return None
        equity = book.equity()
        after = book.gross() + order.qty * reference_price(order, book)
        if equity <= 0 or after > self.max_fraction * equity * (1 + 1e-9):
            return (f"gross exposure would be {after / equity:.1%} of equity, above {self.max_fraction:.0%}"
                    if equity > 0 else "no equity")
        return None


@dataclass
class PriceCollar(Protection):
    """The reference price within `max_deviation` of the last close and inside the KRX daily
    limit band around the previous close (a stale or corrupt price, or a fat-fingered limit)."""
    max_deviation: float = 0.10
    name: ClassVar[str] = "price_collar"

    def check(self, order, book, now):
        last = book.price(order.symbol)
        if last <= 0:
            return f"no last close for {order.symbol}: cannot judge the order's price"
        price = reference_price(order, book)
        if abs(price / last - 1) > self.max_deviation:
            return f"price {price:,.0f} is {price / last - 1:+.1%} from the last close {last:,.0f}"
        base = book.previous_close.get(order.symbol)
        if base:
            lower, upper = krx.price_limits(base, book.day)
            if not lower <= price <= upper:
                return f"price {price:,.0f} outside the KRX daily limit {lower:,.0f}–{upper:,.0f}"
        return None


@dataclass
class DailyLossLimit(Protection):
    """Down more than `max_loss` since the previous close: only orders that shrink a position."""
    max_loss: float = 0.10
    name: ClassVar[str] = "daily_loss_limit"

    def check(self, order, book, now):
        if book.day_start_equity <= 0 or reduces(order, book):
            return None
        loss = 1 - book.equity() / book.day_start_equity
        if loss > self.max_loss:
            return f"daily loss {loss:.1%} above the limit {self.max_loss:.0%}: only orders that reduce"
        return None


@dataclass
class OrderRateThrottle(Protection):
    """At most `max_orders` let through in any `per_s` seconds (a runaway loop cannot spray orders)."""
    max_orders: int = 300
    per_s: float = 60.0
    name: ClassVar[str] = "order_rate"
    _sent: deque = field(default_factory=deque, repr=False)

    def check(self, order, book, now):
        while self._sent and (now - self._sent[0]).total_seconds() >= self.per_s:
            self._sent.popleft()
        if len(self._sent) >= self.max_orders:
            return f"order rate: {self.max_orders} orders in the last {self.per_s:g} s"
        return None

    def allowed(self, order, now):
        self._sent.append(now)


PROTECTIONS: dict[str, type[Protection]] = {
    p.name: p for p in (MaxOrderValue, MaxPosition, MaxGross, PriceCollar, DailyLossLimit, OrderRateThrottle)}
DEFAULT_PROTECTIONS: tuple[dict[str, Any], ...] = tuple({"name": n} for n in PROTECTIONS)


def build_protections(specs: Iterable[Mapping[str, Any]] = DEFAULT_PROTECTIONS) -> list[Protection]:
    """Protections from settings entries `{name: ..., <parameter>: value}`; unknown names or
    parameters are a clear error."""
    return _build_plugins(specs, PROTECTIONS, "risk_engine.protections", "protection")


def _build_plugins(specs: Iterable[Mapping[str, Any]], registry: Mapping[str, type], setting: str,
                   kind: str) -> list:
    """Plug-ins from settings entries `{name: ..., <parameter>: value}` looked up in `registry`;
    an unknown name or parameter is a ValueError naming the setting and what it takes."""
    out = []
    for spec in specs:
        spec = dict(spec)
        name = spec.pop("name", None)
        if name not in registry:
            raise ValueError(f"{setting}: unknown {kind} {name!r} (known: {', '.join(registry)})")
        try:
            out.append(registry[name](**spec))
        except TypeError:
            known = [f.name for f in fields(registry[name]) if not f.name.startswith("_")]
            raise ValueError(f"{setting}: {name} takes {', '.join(known) or 'no parameters'}, "
                             f"got {', '.join(spec)}") from None
    return out


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str = ""
    rule: str = ""


class RiskEngine:
    """Checks a bar's orders in the order they will be sent; projects the book after each one it allows."""

    def __init__(self, protections: Iterable[Protection] | None = None):
        self.protections: list[Protection] = [TradingStateGuard(), *(
            build_protections() if protections is None else protections)]

    def check(self, order: OrderRequest, book: Book, now: dt.datetime) -> Verdict:
        """`now`: when the order goes out (the session time it is stamped with; replays run in
        their own time, so a throttle counts orders per session time, not per wall second)."""
        for rule in self.protections:
            reason = rule.check(order, book, now)
            if reason:
                return Verdict(False, reason, rule.name)
        for rule in self.protections:
            rule.allowed(order, now)
        book.apply(order, reference_price(order, book))
        return Verdict(True)


# --- intraday rules: the book at live marks, during the session ----------------------------------
@dataclass(frozen=True)
class IntradayAction:
    """What an intraday rule asks for: `state` (enter it for the rest of the day) and/or a sell of
    `qty` shares of `symbol`. `reason` is journaled and alerted as it is."""
    rule: str
    reason: str
    symbol: str | None = None
    qty: int = 0
    state: TradingState | None = None


def marked_equity(book: Book, marks: Mapping[str, float]) -> float | None:
    """Cash plus the held names at their live marks; None while a held name has no mark."""
    held = {s: q for s, q in book.positions.items() if q}
    if any(s not in marks for s in held):
        return None
    return book.cash + sum(q * float(marks[s]) for s, q in held.items())


class IntradayRule:
    """One intraday rule: `evaluate` returns the actions the marked book calls for now (none: all
    well). Pure: the same book, marks and time give the same actions; the caller keeps what fired."""
    name: ClassVar[str]

    def evaluate(self, book: Book, marks: Mapping[str, float], now: dt.datetime) -> list[IntradayAction]:
        raise NotImplementedError


@dataclass
class IntradayLossLimit(IntradayRule):
    """The book at live marks is down more than `max_loss` from the day's starting equity (the
    previous close's): REDUCING for the rest of the day, and with `flatten` a sell of every held name."""
    max_loss: float = 0.05
    flatten: bool = False
    name: ClassVar[str] = "intraday_loss_limit"

    def __post_init__(self):
        if not 0 < self.max_loss < 1:
            raise ValueError(f"intraday_loss_limit.max_loss must be in (0, 1), got {self.max_loss}")

    def evaluate(self, book, marks, now):
        equity = marked_equity(book, marks)
        if equity is None or book.day_start_equity <= 0:
            return []
        loss = 1 - equity / book.day_start_equity
        if loss <= self.max_loss:
            return []
        reason = (f"intraday loss {loss:.2%} at live marks ({equity:,.0f} KRW against the day's start "
                  f"{book.day_start_equity:,.0f}) above the limit {self.max_loss:.2%}")
        out = [IntradayAction(self.name, reason, state=TradingState.REDUCING)]
        if self.flatten:
            out += [IntradayAction(self.name, f"{reason}: flatten", s, q)
                    for s, q in sorted(book.positions.items()) if q > 0]
        return out


@dataclass
class PositionStop(IntradayRule):
    """A held name whose live mark is at or below `max_drop` under its reference: one sell of the
    whole holding. The reference is the previous session's close (the last final daily bar,
    `Book.last_close`, the price the day's decision was made on), not the average cost: it is the
    same for a name bought years ago and one bought this morning, and known without the broker."""
    max_drop: float = 0.08
    name: ClassVar[str] = "position_stop"

    def __post_init__(self):
        if not 0 < self.max_drop < 1:
            raise ValueError(f"position_stop.max_drop must be in (0, 1), got {self.max_drop}")

    def stop_price(self, book: Book, symbol: str) -> float | None:
        ref = book.price(symbol)
        return ref * (1 - self.max_drop) if ref > 0 else None

    def evaluate(self, book, marks, now):
        out = []
        for symbol, qty in sorted(book.positions.items()):
            stop = self.stop_price(book, symbol)
            if qty <= 0 or symbol not in marks or stop is None or float(marks[symbol]) > stop:
                continue
            mark, ref = float(marks[symbol]), book.price(symbol)
            out.append(IntradayAction(self.name, f"{symbol} marked {mark:,.0f} is {mark / ref - 1:+.2%} from the "
                                      f"previous close {ref:,.0f}, at or below the stop {-self.max_drop:.2%}",
                                      symbol, qty))
        return out


INTRADAY_RULES: dict[str, type[IntradayRule]] = {r.name: r for r in (IntradayLossLimit, PositionStop)}


def build_intraday_rules(specs: Iterable[Mapping[str, Any]] = ()) -> list[IntradayRule]:
    """Intraday rules from settings entries `{name: ..., <parameter>: value}` (none by default:
    a deployment opts in); unknown names or parameters are a clear error."""
    return _build_plugins(specs, INTRADAY_RULES, "risk_engine.intraday", "rule")


def evaluate_intraday(rules: Iterable[IntradayRule], book: Book, marks: Mapping[str, float],
                      now: dt.datetime) -> list[IntradayAction]:
    """Every rule's actions, in rule order (a state change before the sells it comes with)."""
    return [a for rule in rules for a in rule.evaluate(book, marks, now)]
