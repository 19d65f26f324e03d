"""Execution algorithms: how one decided order (the parent) reaches the market as child orders.

Plain Python (no Ray, no broker calls): a plan only says what to do next; the loop's session
driver (actors/session_algos.py) does it — each child through the loop's own order path
(TradingLoop._send_checked: the risk engine, the journal's intent before the send, the broker),
journaled under its parent (broker/journal.py `parent_orders`, `orders.parent_id`).

* `market_open` — today's behaviour and the default: the parent itself goes out as one market
  order at the session's order time (no children, no plan).
* `twap` — `twap_children` market children evenly over `twap_window_min` minutes from the
  order time (child k at start + k × window / n; the shares split evenly, the first
  `qty mod n` children one share more; never more children than shares). A window reaching
  past the order cutoff is shortened to end there.
* `limit_touch` — a limit child at the touch (best bid for a buy, best ask for a sell, on the
  KRX tick grid of the day, inside the daily price limits), re-priced when the touch moves:
  the working child is cancelled and, once its fills are known, a new child for what is left
  goes out at the new touch (cancel/replace). At the window's end (`touch_window_min`, shortened
  to the cutoff) what is still unfilled is cancelled and sent as one market child: the decision
  wants the position today, and a day order left unfilled would leave the book off its target
  until the next decision, while a market order at the end costs at most crossing the spread
  once more. A child the risk engine denies (or the broker refuses) ends its parent: the next
  one would be the same order at another price.

Client order ids are deterministic — `<parent>-T01…` (TWAP), `<parent>-L01…` (each re-priced
limit), `<parent>-M` (the end-of-window market child) — so a restarted loop recomputes the same
ids, and `resume` skips every child already journaled (a restarted limit_touch plan sends
nothing more): the journal refuses a second intent and the broker recognises the id, so no
child is ever sent twice.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from broker.base import OrderRequest, OrderType, Side
from market import krx

ALGOS = ("market_open", "limit_touch", "twap")


@dataclass(frozen=True)
class AlgoConfig:
    """The settings' `execution` section (cluster/settings.py ExecutionSettings)."""
    algo: str = "market_open"
    twap_window_min: float = 60.0
    twap_children: int = 6
    touch_window_min: float = 30.0

    def __post_init__(self):
        if self.algo not in ALGOS:
            raise ValueError(f"execution.algo must be one of {', '.join(ALGOS)}, got {self.algo!r}")
        if self.twap_window_min <= 0 or self.touch_window_min <= 0:
            raise ValueError("execution.twap_window_min and execution.touch_window_min must be > 0 minutes")
        if not isinstance(self.twap_children, int) or self.twap_children < 1:
            raise ValueError(f"execution.twap_children must be a whole number >= 1, got {self.twap_children!r}")

    @property
    def sliced(self) -> bool:
        """Does the parent go out as children over the session (needs the real-time loop)?"""
        return self.algo != "market_open"


@dataclass(frozen=True)
class Place:
    request: OrderRequest


@dataclass(frozen=True)
class Cancel:
    client_order_id: str


Action = Place | Cancel


def window_end(start: dt.datetime, minutes: float, cutoff: dt.datetime) -> dt.datetime:
    return min(start + dt.timedelta(minutes=minutes), cutoff)


def twap_schedule(parent: OrderRequest, start: dt.datetime, end: dt.datetime, children: int) -> list[tuple[dt.datetime, OrderRequest]]:
    """(send time, market child) for each child: evenly in [start, end), shares split evenly."""
    if end <= start:
        raise ValueError(f"{parent.client_order_id}: the TWAP window must end after it starts ({start} … {end})")
    n = min(children, parent.qty)
    base, extra = divmod(parent.qty, n)
    step = (end - start) / n
    return [(start + k * step, OrderRequest(f"{parent.client_order_id}-T{k + 1:02d}", parent.symbol, parent.side,
                                            base + (1 if k < extra else 0)))
            for k in range(n)]


def touch_price(side: Side, bid: int, ask: int, day: dt.date, previous_close: float | None = None,
                market: krx.Market | str = krx.Market.KOSPI) -> int:
    """The limit price at the touch on the tick grid: a buy joins the best bid (rounded down onto
    the grid), a sell the best ask (rounded up), kept inside the daily price limits of
    `previous_close` when it is known."""
    price = int(krx.round_to_tick(bid, day, market, "down")) if side is Side.BUY else \
        int(krx.round_to_tick(ask, day, market, "up"))
    if previous_close:
        lower, upper = (int(x) for x in krx.price_limits(previous_close, day, market))
        price = min(max(price, lower), upper)
    return price


@dataclass
class TwapPlan:
    parent: OrderRequest
    schedule: list[tuple[dt.datetime, OrderRequest]]
    released: int = 0          # children handed out so far (sent, denied or refused)
    stopped: bool = False

    @property
    def done(self) -> bool:
        return self.stopped or self.released >= len(self.schedule)

    def next(self, now: dt.datetime, touch: tuple[int, int] | None) -> Action | None:
        if self.done or self.schedule[self.released][0] > now:
            return None
        return Place(self.schedule[self.released][1])

    def placed(self, request: OrderRequest, working: bool) -> None:
        self.released += 1     # a denied child is skipped; the later ones still go out

    def ended(self, client_order_id: str, filled: int) -> None:
        return None            # market children are not cancelled by the plan

    def resume(self, journaled: set[str]) -> None:
        while self.released < len(self.schedule) and self.schedule[self.released][1].client_order_id in journaled:
            self.released += 1

    def stop(self) -> str | None:
        """Stop sending (an intraday stop took the name over); nothing to cancel (market children)."""
        self.stopped = True
        return None


@dataclass
class TouchPlan:
    parent: OrderRequest
    day: dt.date
    end: dt.datetime
    previous_close: float | None = None
    filled: int = 0                      # shares of children already ended (cancelled or done)
    working: OrderRequest | None = None  # the limit child at the touch now
    children: int = 0                    # limit children sent (the next is L<children+1>)
    swept: bool = False
    stopped: bool = False
    prices: list[int] = field(default_factory=list)   # each limit child's price, in order

    @property
    def done(self) -> bool:
        return self.stopped or (self.working is None and (self.swept or self.filled >= self.parent.qty))

    def next(self, now: dt.datetime, touch: tuple[int, int] | None) -> Action | None:
        if self.done:
            return None
        remaining = self.parent.qty - self.filled
        if now >= self.end:
            if self.working is not None:
                return Cancel(self.working.client_order_id)
            self.swept = True
            return Place(OrderRequest(f"{self.parent.client_order_id}-M", self.parent.symbol, self.parent.side,
                                      remaining))
        if touch is None:
            return None          # no quote yet: wait for the book
        price = touch_price(self.parent.side, touch[0], touch[1], self.day, self.previous_close)
        if self.working is None:
            return Place(OrderRequest(f"{self.parent.client_order_id}-L{self.children + 1:02d}", self.parent.symbol,
                                      self.parent.side, remaining, OrderType.LIMIT, price))
        if self.working.limit_price != price:
            return Cancel(self.working.client_order_id)   # the touch moved: replace once its fills are known
        return None

    def placed(self, request: OrderRequest, working: bool) -> None:
        if request.order_type is OrderType.LIMIT:
            self.children += 1
            self.prices.append(int(request.limit_price or 0))
            if working:
                self.working = request
            else:
                self.stopped = True    # denied or refused: the next child would be the same order
        # the market child at the end is the last word either way

    def ended(self, client_order_id: str, filled: int) -> None:
        if self.working is not None and self.working.client_order_id == client_order_id:
            self.working = None
            self.filled += filled

    def resume(self, journaled: set[str]) -> None:
        """After a restart with children already journaled: send nothing more (the fills of the
        child that was working are not known here; it stays at the broker as a day order)."""
        limits = [c for c in journaled if c.startswith(f"{self.parent.client_order_id}-L")]
        if limits or f"{self.parent.client_order_id}-M" in journaled:
            self.children = len(limits)
            self.stopped = True

    def stop(self) -> str | None:
        """Stop working the parent; returns the limit child to cancel, if one is working."""
        self.stopped = True
        return self.working.client_order_id if self.working is not None else None


Plan = TwapPlan | TouchPlan


def plan_for(config: AlgoConfig, parent: OrderRequest, start: dt.datetime, cutoff: dt.datetime,
             previous_close: float | None = None) -> Plan:
    """The plan of one parent under `config` (not for market_open: that parent is sent as it is)."""
    if config.algo == "twap":
        return TwapPlan(parent, twap_schedule(parent, start, window_end(start, config.twap_window_min, cutoff),
                                              config.twap_children))
    if config.algo == "limit_touch":
        return TouchPlan(parent, start.date(), window_end(start, config.touch_window_min, cutoff), previous_close)
    raise ValueError(f"execution.algo {config.algo!r} sends the parent itself: it has no plan")
