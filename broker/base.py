"""The Broker interface every venue implements (paper, KIS simulator, KIS VTS, KIS live).

Orders carry a client order id chosen by the caller and journaled before submission; a broker
must let the caller look an order up by it, so that an order whose outcome is unknown (timeout,
crash) is checked, never blindly re-sent.
"""
from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum


class Side(str, Enum):
    BUY = "buy"
    SELL = "sell"


class OrderType(str, Enum):
    MARKET = "market"
    LIMIT = "limit"


class OrderStatus(str, Enum):
    OPEN = "open"            # accepted, waiting for the market
    FILLED = "filled"
    PARTIAL = "partial"      # partly filled; the rest expired or was cancelled
    CANCELLED = "cancelled"
    EXPIRED = "expired"      # a day order the market never filled
    REJECTED = "rejected"    # refused by the broker, or never sent (rate limit); `reason` says why
    UNKNOWN = "unknown"      # sent, but the venue could not be asked whether it has it: never re-send
                             # it, and send nothing else for its symbol until a lookup settles it

    @property
    def done(self) -> bool:
        return self not in (OrderStatus.OPEN, OrderStatus.UNKNOWN)


class OrderError(ValueError):
    """A malformed order request (raised before anything is journaled or sent)."""


@dataclass(frozen=True)
class OrderRequest:
    client_order_id: str
    symbol: str
    side: Side
    qty: int
    order_type: OrderType = OrderType.MARKET
    limit_price: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "side", Side(self.side))
        object.__setattr__(self, "order_type", OrderType(self.order_type))
        if not self.client_order_id:
            raise OrderError("client_order_id is required")
        if not isinstance(self.qty, int) or isinstance(self.qty, bool) or self.qty <= 0:
            raise OrderError(f"{self.client_order_id}: qty must be a positive whole number of shares, got {self.qty!r}")
        if self.order_type is OrderType.LIMIT:
            if not isinstance(self.limit_price, int) or self.limit_price <= 0:
                raise OrderError(f"{self.client_order_id}: a limit order needs a positive integer KRW limit_price, "
                                 f"got {self.limit_price!r}")
        elif self.limit_price is not None:
            raise OrderError(f"{self.client_order_id}: a market order takes no limit_price")


@dataclass
class Order:
    request: OrderRequest
    broker_order_id: str
    status: OrderStatus
    submitted_at: dt.datetime
    filled_qty: int = 0
    reason: str = ""

    @property
    def client_order_id(self) -> str:
        return self.request.client_order_id


@dataclass(frozen=True)
class Fill:
    client_order_id: str
    broker_order_id: str
    symbol: str
    side: Side
    qty: int
    price: int          # KRW, on the tick grid
    commission: int     # KRW
    tax: int            # KRW
    filled_at: dt.datetime
    # the broker's identity of this fill within its order, the same however often it is reported
    # (KIS: the order's cumulative executed quantity after it), so a re-reported fill is journaled once
    fill_id: str

    @property
    def cash_flow(self) -> int:
        """Cash change from this fill: sale proceeds net of costs, or −(cost + commission)."""
        gross = self.qty * self.price
        return gross - self.commission - self.tax if self.side is Side.SELL else -(gross + self.commission)


@dataclass(frozen=True)
class AccountSnapshot:
    cash: int
    positions: dict[str, int] = field(default_factory=dict)


class Broker(ABC):
    """What the execution side needs from a venue."""

    @abstractmethod
    def submit(self, request: OrderRequest) -> Order:
        """Send one order. Business refusals come back as a REJECTED order with a reason."""

    @abstractmethod
    def cancel(self, broker_order_id: str) -> Order: ...

    @abstractmethod
    def find_order(self, client_order_id: str) -> Order | None:
        """The order sent under this client id today, if the venue has it."""

    @abstractmethod
    def open_orders(self) -> list[Order]: ...

    @abstractmethod
    def fills(self) -> list[Fill]:
        """Every fill of the session, oldest first."""

    @abstractmethod
    def positions(self) -> dict[str, int]:
        """Shares held per symbol (only non-zero holdings)."""

    @abstractmethod
    def cash(self) -> int:
        """Cash in KRW available for orders."""

    def confirm_fills(self, fills: list[Fill]) -> None:
        """The journal has these fills: a venue that reports fills from its own bookkeeping stops
        reporting them only now, so a crash before the journal write loses none. Default: nothing
        to do (a venue that reports each fill once, like the paper broker)."""
        return None

    def account(self) -> AccountSnapshot:
        return AccountSnapshot(cash=self.cash(), positions=self.positions())
