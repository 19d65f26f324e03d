"""Request and response of POST /v1/decide. Validation errors become HTTP 422 naming the field.

Bounds (issue 17, "bad input"): prices finite and > 0 (null = no bar), volumes finite and >= 0,
high >= low, strictly increasing dates ending at as_of, as_of not after today in Seoul, cash and
share counts below what any account holds, and sizes of the universe, the history and each
symbol limited (the body size is limited in serving/http.py).
"""
from __future__ import annotations

import datetime as dt
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, StringConstraints, model_validator

FIELDS = ("open", "high", "low", "close", "volume")
MAX_SYMBOLS = 500
MAX_DATES = 5000          # 20 years of daily bars
MAX_CASH = 10 ** 15       # KRW: a thousand trillion, far above any account
MAX_SHARES = 10 ** 12
SEOUL = ZoneInfo("Asia/Seoul")

Symbol = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{1,12}$")]
RunId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Price = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Volume = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PriceRow = Annotated[list[Price | None], Field(max_length=MAX_SYMBOLS)]
VolumeRow = Annotated[list[Volume | None], Field(max_length=MAX_SYMBOLS)]


class Bars(BaseModel):
    """A market snapshot: daily bars (rows = dates, columns = symbols); null = no bar."""

    dates: list[dt.date] = Field(min_length=1, max_length=MAX_DATES)
    symbols: list[Symbol] = Field(min_length=1, max_length=MAX_SYMBOLS)
    open: list[PriceRow] = Field(max_length=MAX_DATES)
    high: list[PriceRow] = Field(max_length=MAX_DATES)
    low: list[PriceRow] = Field(max_length=MAX_DATES)
    close: list[PriceRow] = Field(max_length=MAX_DATES)
    volume: list[VolumeRow] = Field(max_length=MAX_DATES)

    @model_validator(mode="after")
    def _consistent(self) -> "Bars":
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("symbols must be unique")
        if any(b <= a for a, b in zip(self.dates, self.dates[1:])):
            raise ValueError("dates must be strictly increasing")
        shape = (len(self.dates), len(self.symbols))
        for name in FIELDS:
            rows = getattr(self, name)
            if len(rows) != shape[0] or any(len(r) != shape[1] for r in rows):
                raise ValueError(f"{name} must be {shape[0]} rows × {shape[1]} symbols")
        for i, (hi, lo) in enumerate(zip(self.high, self.low)):
            for j, (h, lw) in enumerate(zip(hi, lo)):
                if h is not None and lw is not None and h < lw:
                    raise ValueError(f"high < low for {self.symbols[j]} on {self.dates[i]}")
        if all(v is None for v in self.close[-1]):
            raise ValueError("close: the last bar has no close for any symbol")
        return self


class Portfolio(BaseModel):
    cash: int = Field(ge=0, le=MAX_CASH, description="KRW")
    positions: dict[Symbol, Annotated[int, Field(ge=0, le=MAX_SHARES)]] = Field(
        default_factory=dict, max_length=MAX_SYMBOLS, description="shares per symbol (long only)")


class DecideRequest(BaseModel):
    """Either the bars themselves (`bars`: any caller) or a reference to them (`universe` and
    `market`: the service reads the bars up to `as_of` from that market state, held in Ray — the
    trading loop's small request, no snapshot shipped)."""

    as_of: dt.date
    bars: Bars | None = None
    universe: list[Symbol] | None = Field(None, min_length=1, max_length=MAX_SYMBOLS,
                                          description="symbols to decide on, bars read from the market state")
    market: RunId | None = Field(None, description="the market state (in Ray) that holds the bars of `universe`")
    portfolio: Portfolio | None = None
    run_id: RunId | None = Field(None, description="the trading run whose decision state this continues; "
                                                   "needs that run's bearer token. Absent: a stateless decision")

    @model_validator(mode="after")
    def _as_of_is_last_bar(self) -> "DecideRequest":
        today = dt.datetime.now(SEOUL).date()
        if self.as_of > today:
            raise ValueError(f"as_of {self.as_of} is in the future (today in Seoul is {today})")
        if (self.bars is None) == (self.universe is None):
            raise ValueError("give either bars (a snapshot) or universe (bars read from the market state), "
                             "not both and not neither")
        if self.bars is not None:
            if self.market is not None:
                raise ValueError("market: names where to read the bars of `universe`; a request with bars needs none")
            if self.bars.dates[-1] != self.as_of:
                raise ValueError(f"as_of {self.as_of} must be the last bar date {self.bars.dates[-1]}: "
                                 "a decision sees no bar after its decision time")
        elif self.universe is not None:
            if len(set(self.universe)) != len(self.universe):
                raise ValueError("universe: symbols must be unique")
            if self.market is None:
                raise ValueError("market: a request by reference (universe) names the market state holding its bars")
        return self


class AgentDecision(BaseModel):
    weight: float = Field(description="the agent's share of the ensemble (0 when it abstained)")
    targets: dict[str, float] = Field(description="the agent's own target weights (empty when it abstained)")
    abstained: str | None = Field(None, description="why the agent made no decision on this snapshot "
                                                    "(e.g. an RL model whose universe is not in it)")


class DecideResponse(BaseModel):
    as_of: dt.date
    run_id: str | None = None
    rebalance: bool = Field(True, description="false on a bar between decisions: hold the book, send nothing")
    targets: dict[str, float] = Field(description="sized target weights of equity, long-only, sum <= 1")
    agents: dict[str, AgentDecision]
    regime: dict[str, float] | None = None
    risk: dict = Field(default_factory=dict)
