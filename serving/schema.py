"""Request and response of POST /v1/decide. Validation errors become HTTP 422 (FastAPI).

Bounds are part of the contract: a request outside them is refused with 422 naming the field,
before any agent or risk state sees it (a huge cash figure or a zero price would otherwise move
the drawdown state or crash the risk model).
"""
from __future__ import annotations

import datetime as dt
import math
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints, model_validator

FIELDS = ("open", "high", "low", "close", "volume")
PRICES = ("open", "high", "low", "close")
MAX_SYMBOLS = 500          # KOSPI 200 + KOSDAQ 150 with room to spare
MAX_BARS = 5_000           # 20 years of daily bars
MAX_CASH = 10 ** 15        # KRW 1,000 trillion: more than any account
MAX_SHARES = 10 ** 12
MAX_BODY_BYTES = 64 * 1024 * 1024
Symbol = Annotated[str, StringConstraints(pattern=r"^[0-9A-Z]{6}$")]   # KRX short code, e.g. 005930
RunId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


def seoul_today() -> dt.date:
    from market.calendar import SEOUL

    return dt.datetime.now(SEOUL).date()


class Bars(BaseModel):
    """A market snapshot: daily bars (rows = dates, columns = symbols); null = no bar."""

    dates: list[dt.date] = Field(min_length=1, max_length=MAX_BARS)
    symbols: list[Symbol] = Field(min_length=1, max_length=MAX_SYMBOLS)
    open: list[list[float | None]]
    high: list[list[float | None]]
    low: list[list[float | None]]
    close: list[list[float | None]]
    volume: list[list[float | None]]

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
            if name in PRICES:
                if any(v is not None and not (math.isfinite(v) and v > 0) for r in rows for v in r):
                    raise ValueError(f"{name} holds a price that is not a finite number > 0 (use null for no bar)")
            elif any(v is not None and not (math.isfinite(v) and v >= 0) for r in rows for v in r):
                raise ValueError(f"{name} holds a value that is not a finite number >= 0 (use null for no bar)")
        for i, (hi, lo) in enumerate(zip(self.high, self.low)):
            for j, (h, lo_) in enumerate(zip(hi, lo)):
                if h is not None and lo_ is not None and h < lo_:
                    raise ValueError(f"high < low for {self.symbols[j]} on {self.dates[i]}")
        return self


class Portfolio(BaseModel):
    cash: int = Field(ge=0, le=MAX_CASH, description="KRW")
    positions: dict[Symbol, Annotated[int, Field(le=MAX_SHARES)]] = Field(
        default_factory=dict, max_length=MAX_SYMBOLS, description="shares per symbol")

    @model_validator(mode="after")
    def _long_only(self) -> "Portfolio":
        bad = {s: q for s, q in self.positions.items() if q < 0}
        if bad:
            raise ValueError(f"negative positions are not allowed: {bad}")
        return self


class DecideRequest(BaseModel):
    as_of: dt.date
    bars: Bars
    portfolio: Portfolio | None = None
    run_id: RunId = Field("default", description="the run whose decision state (online agent scores, "
                                                 "drawdown state) this decision reads and updates")

    @model_validator(mode="after")
    def _as_of_is_last_bar(self) -> "DecideRequest":
        if self.as_of > seoul_today():
            raise ValueError(f"as_of {self.as_of} is in the future (today in Seoul is {seoul_today()})")
        if self.bars.dates[-1] != self.as_of:
            raise ValueError(f"as_of {self.as_of} must be the last bar date {self.bars.dates[-1]}: "
                             "a decision sees no bar after its decision time")
        return self


class AgentDecision(BaseModel):
    weight: float = Field(description="the agent's share of the ensemble (0 when it abstained)")
    targets: dict[str, float] = Field(description="the agent's own target weights (empty when it abstained)")
    abstained: str | None = Field(None, description="why the agent made no decision on this snapshot "
                                                    "(e.g. an RL model whose universe is not in it)")


class DecideResponse(BaseModel):
    as_of: dt.date
    targets: dict[str, float] = Field(description="sized target weights of equity, long-only, sum <= 1")
    agents: dict[str, AgentDecision]
    regime: dict[str, float] | None = None
    risk: dict = Field(default_factory=dict)
