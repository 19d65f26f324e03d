"""Request and response of POST /v1/decide. Validation errors become HTTP 422 (FastAPI)."""
from __future__ import annotations

import datetime as dt
import math

from pydantic import BaseModel, Field, model_validator

FIELDS = ("open", "high", "low", "close", "volume")


class Bars(BaseModel):
    """A market snapshot: daily bars (rows = dates, columns = symbols); null = no bar."""

    dates: list[dt.date] = Field(min_length=1)
    symbols: list[str] = Field(min_length=1)
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
            if any(v is not None and (math.isnan(v) or v < 0) for r in rows for v in r):
                raise ValueError(f"{name} holds a negative or NaN value (use null for no bar)")
        return self


class Portfolio(BaseModel):
    cash: int = Field(ge=0, description="KRW")
    positions: dict[str, int] = Field(default_factory=dict, description="shares per symbol")

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

    @model_validator(mode="after")
    def _as_of_is_last_bar(self) -> "DecideRequest":
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
