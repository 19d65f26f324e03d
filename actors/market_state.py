"""MarketStateActor: the live market state. Here it replays stored daily bars as the feed."""
from __future__ import annotations

import datetime as dt
import uuid
from collections import OrderedDict

import numpy as np
import ray

from market.data import Panel

MAX_SHARED_WINDOWS = 8


def shared_window(market, as_of, symbols, lookback: int) -> ray.ObjectRef:
    """`market.window(...)` put in Ray's object store once, so that every decision on the same bar
    (the members, other runs' requests) reads it from there instead of receiving a copy. Keyed by
    (as_of, universe, lookback); forgotten when the market state's panel is replaced (a live
    refresh, a re-adjusted history). Call it inside the market state's actor (it owns the objects)."""
    cache = market.__dict__.setdefault("_shared_windows", {"panel": None, "refs": OrderedDict()})
    if cache["panel"] is not market.panel:   # the old panel is held, so its id is never reused
        cache.update(panel=market.panel, refs=OrderedDict())
    key = (str(as_of), tuple(symbols), int(lookback))
    refs = cache["refs"]
    if key not in refs:   # window() refuses a bar not yet seen; a bar once seen stays seen
        refs[key] = ray.put(market.window(as_of, symbols, lookback))
        while len(refs) > MAX_SHARED_WINDOWS:
            refs.popitem(last=False)
    refs.move_to_end(key)
    return refs[key]


class MarketState:
    """Replays a Panel bar by bar. `cursor` is the last bar that has happened (the decision bar)."""

    def __init__(self, panel: Panel, start_index: int, benchmark: np.ndarray | None = None):
        if not 0 <= start_index < len(panel):
            raise ValueError(f"start_index {start_index} outside the panel's {len(panel)} bars")
        self.panel = panel
        self.cursor = start_index
        self.benchmark = benchmark

    def today(self) -> dt.date:
        return self.panel.date(self.cursor)

    def remaining(self) -> int:
        return len(self.panel) - 1 - self.cursor

    def wait_for_order_window(self) -> None:
        """A replay has no wall time to wait for (the live state sleeps until the session)."""

    def snapshot(self, lookback: int) -> dict:
        """Bars up to and including the cursor: what a decision at this bar may see."""
        return self.panel.rows(self.cursor + 1 - lookback, self.cursor + 1).to_dict()

    def window(self, as_of, symbols, lookback: int) -> Panel:
        """A decision's bars by reference (serving resolves /v1/decide's `universe` requests here)."""
        return self.panel.window(as_of, symbols, lookback, known_until=self.today())

    def window_ref(self, as_of, symbols, lookback: int) -> ray.ObjectRef:
        return shared_window(self, as_of, symbols, lookback)

    def bars(self) -> dict:
        """The cursor bar as {symbol: (open, high, low, close)} plus its date and benchmark close."""
        i = self.cursor
        p = self.panel
        bars = {s: (p.open[i, j], p.high[i, j], p.low[i, j], p.close[i, j]) for j, s in enumerate(p.symbols)}
        bench = None if self.benchmark is None else float(self.benchmark[i])
        return {"date": self.today(), "bars": bars, "benchmark": bench}

    def advance(self) -> dict | None:
        """Move to the next bar and return it; None when the replay is over."""
        if self.remaining() <= 0:
            return None
        self.cursor += 1
        return self.bars()


MarketStateActor = ray.remote(num_cpus=0)(MarketState)


def new_market_name() -> str:
    """A fresh market state name: unique, so that a rerun of a run id never meets a dying namesake."""
    return f"m{uuid.uuid4().hex[:16]}"


def market_actor_name(market: str) -> str:
    """The Ray name (in actors.NAMESPACE) of the market state `market`: the decision service finds
    the bars of a request by reference (its `market` field) under it."""
    return f"market:{market}"
