"""The backtest engine: decisions on bar t's close, fills on bar t+1 through the one accounting.

A strategy is any of
* an `Agent` (strategies/base.py): `target_weights(panel.rows(0, t + 1))` is asked at each
  rebalance bar t — the window ends at t, so nothing after t is in it;
* a plain callable `window -> weights` (same contract);
* an object with `weights_matrix(panel) -> (T, N)` (a vectorised strategy: row t must depend
  only on rows <= t; `backtest.lookahead` checks that it does);
* a (T, N) array of target weights (row t = the decision at the close of bar t).

Orders are made at the close of t (reference price = the last known close) and executed against
bar t+1 by `market.accounting_kernel.advance`: the rules of `market.accounting.orders_for_targets`
and `market.accounting.execute` — the two functions the PaperBroker uses — compiled into one loop
over the bars and tested equal to them fill for fill (tests/unit/test_accounting_kernel.py), so
research and paper trading charge the same costs.

Universe (survivorship): at bar t a symbol is tradable only once it has had its first bar
(a symbol with no bar yet is not listed for this data set) and, if `delisted` names it, not on
or after its delisting date. Weights on untradable symbols are dropped. A position in a symbol
that gets delisted is closed at its last known close on the delisting date (commission and
tax charged) — the shipped data has no such case, but a newer data file might.

Suspended or missing bars: the valuation uses the last known close; orders for a symbol with no
bar on the execution day do not fill (the accounting reports NO_BAR), and the position is kept.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import polars as pl

from market import accounting_kernel as kernel
from market.accounting import (  # noqa: F401  (ffill_close, tax_rates_by_bar: imported from here by callers)
    BUY,
    AccountingInputs,
    CostModel,
    QuoteTable,
    check_targets,
    ffill_close,
    tax_rates_by_bar,
)
from market.data import Panel
from strategies.base import check_weights

REBALANCE_CHOICES = ("daily", "weekly", "monthly", "quarterly", "once")


@dataclass(frozen=True)
class BacktestConfig:
    """How a backtest trades. `rebalance`: daily, weekly, monthly, quarterly, once, or an int
    (every n bars). Weekly/monthly/quarterly decide on the first bar of each new period (known
    from that bar's own date, so no calendar look-ahead); the first decision bar always trades.
    An agent's own `rebalance` attribute, if it has one, overrides the config's."""

    cash: int = 100_000_000
    costs: CostModel = CostModel()
    rebalance: str | int = "daily"
    min_trade_value: float = 0.0     # KRW; skip smaller order deltas (avoids one-share churn)
    cash_buffer: float = 0.01        # buys sized so they fit the cash with this margin
    progress: bool = False           # tqdm bar over the decision bars
    sell_tax: bool = True            # False only to compare with tools that cannot charge a sell-side tax
    # skip order deltas smaller than this fraction of the decision-time equity: the served loop's
    # rule (actors/execution.py LoopConfig.rebalance_band), so `trader check-parity` can ask for it
    rebalance_band: float = 0.0

    def __post_init__(self):
        if not isinstance(self.cash, (int, np.integer)) or self.cash <= 0:
            raise ValueError(f"starting cash must be a positive whole number of KRW, got {self.cash!r}")
        if isinstance(self.rebalance, str):
            if self.rebalance not in REBALANCE_CHOICES:
                raise ValueError(f"rebalance must be one of {REBALANCE_CHOICES} or a number of bars, "
                                 f"got {self.rebalance!r}")
        elif int(self.rebalance) < 1:
            raise ValueError(f"rebalance every n bars needs n >= 1, got {self.rebalance}")
        if not 0 <= self.rebalance_band < 1:
            raise ValueError(f"rebalance_band must be a fraction of equity in [0, 1), got {self.rebalance_band}")


@dataclass
class BacktestResult:
    """Daily account over the backtest. Row 0 is the decision bar before the first execution
    (the account as it started); every later row is marked at that bar's close."""

    dates: np.ndarray          # datetime64[D], (D,)
    symbols: tuple[str, ...]
    equity: np.ndarray         # KRW float, cash + holdings × last known close
    cash: np.ndarray           # KRW int64
    holdings: np.ndarray       # (D, N) int64 shares
    prices: np.ndarray         # (D, N) last known close used for the valuation
    targets: np.ndarray        # (D, N) target weights decided at that close (NaN: no decision)
    commission: np.ndarray     # KRW per day
    tax: np.ndarray            # KRW per day
    traded_value: np.ndarray   # KRW bought + sold per day
    fills: pl.DataFrame        # date, symbol, side, qty, price, commission, tax
    strategy: str = ""
    orders: pl.DataFrame | None = None  # decided (date of the decision bar), symbol, side, qty

    @property
    def weights(self) -> np.ndarray:
        """Held weights at each close (fraction of equity per symbol)."""
        return self.holdings * np.nan_to_num(self.prices) / self.equity[:, None]

    @property
    def exposure(self) -> np.ndarray:
        return self.weights.sum(axis=1)

    @property
    def returns(self) -> np.ndarray:
        return self.equity[1:] / self.equity[:-1] - 1.0

    @property
    def costs(self) -> np.ndarray:
        return (self.commission + self.tax).astype(float)

    @property
    def turnover(self) -> np.ndarray:
        """Daily one-way turnover: half the value traded over the day's equity."""
        return self.traded_value / 2.0 / self.equity

    def metrics(self, benchmark: np.ndarray | None = None) -> dict[str, float]:
        from backtest.metrics import compute

        return compute(self.equity, benchmark=benchmark, traded_value=float(self.traded_value.sum()),
                       costs=float(self.costs.sum()), orders=len(self.fills))

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame({
            "date": self.dates, "equity": self.equity, "cash": self.cash, "exposure": self.exposure,
            "commission": self.commission, "tax": self.tax, "traded_value": self.traded_value,
        })


# --- strategy adapters ----------------------------------------------------------------------
def strategy_name(strategy: Any) -> str:
    return str(getattr(strategy, "name", getattr(strategy, "__name__", type(strategy).__name__)))


def _decider(strategy: Any, panel: Panel) -> tuple[Callable[[int, int, np.ndarray], np.ndarray], np.ndarray | None]:
    """((t, cash, holdings) -> raw target weights decided at the close of bar t, the whole (T, N)
    matrix when the strategy is one — validated once instead of bar by bar). A strategy with
    `needs_account` (the ensemble: its drawdown protection sizes against the real book) gets the
    account at that close as a `strategies.pipeline.Account`."""
    if isinstance(strategy, np.ndarray) or hasattr(strategy, "weights_matrix"):
        if isinstance(strategy, np.ndarray):
            matrix, what = np.asarray(strategy, dtype=float), "weights matrix"
        else:
            matrix = np.asarray(strategy.weights_matrix(panel), dtype=float)
            what = f"{strategy_name(strategy)}.weights_matrix"
        if matrix.shape != panel.close.shape:
            raise ValueError(f"{what} has shape {matrix.shape}, the panel {panel.close.shape}")
        return (lambda t, cash, holdings: matrix[t]), matrix
    if getattr(strategy, "needs_account", False):
        from strategies.pipeline import Account

        symbols = panel.symbols

        def with_account(t, cash, holdings):
            book = Account(int(cash), {s: int(q) for s, q in zip(symbols, holdings) if q})
            return strategy.target_weights(panel.rows(0, t + 1), book)
        return with_account, None
    if hasattr(strategy, "target_weights"):
        return (lambda t, cash, holdings: strategy.target_weights(panel.rows(0, t + 1))), None
    if callable(strategy):
        return (lambda t, cash, holdings: strategy(panel.rows(0, t + 1))), None
    raise TypeError(f"not a strategy: {strategy!r} (want an Agent, a callable window -> weights, "
                    f"an object with weights_matrix(panel), or a (T, N) weights array)")


def rebalance_mask(dates: np.ndarray, rule: str | int, first: int) -> np.ndarray:
    """Bars (>= first) on which a decision is made. Uses each bar's own date only."""
    d = np.asarray(dates, dtype="datetime64[D]")
    mask = np.zeros(len(d), dtype=bool)
    if first >= len(d):
        return mask
    if rule == "daily":
        mask[first:] = True
    elif rule == "once":
        mask[first] = True
    elif isinstance(rule, str):
        if rule == "weekly":
            # weeks counted from a Monday: 1970-01-05 was one
            key = (d - np.datetime64("1970-01-05", "D")).astype(np.int64) // 7
        else:
            months = d.astype("datetime64[M]").astype(np.int64)
            key = months if rule == "monthly" else months // 3
        new_period = np.r_[True, key[1:] != key[:-1]]
        mask[first:] = new_period[first:]
        mask[first] = True
    else:
        n = int(rule)
        mask[first::n] = True
    return mask


def first_bar_index(close: np.ndarray) -> np.ndarray:
    """Row of each symbol's first bar (len(close) if it never trades)."""
    has = ~np.isnan(close)
    return np.where(has.any(axis=0), has.argmax(axis=0), len(close))


def delisting_index(dates: np.ndarray, symbols, delisted: dict[str, dt.date] | None) -> np.ndarray:
    """Row from which each symbol is delisted (len(dates) if never)."""
    out = np.full(len(symbols), len(dates), dtype=np.int64)
    for j, s in enumerate(symbols):
        day = (delisted or {}).get(s)
        if day is not None:
            out[j] = int(np.searchsorted(dates, np.datetime64(day, "D")))
    return out


# --- the engine -----------------------------------------------------------------------------
def run_backtest(strategy: Any, panel: Panel, start=None, end=None, config: BacktestConfig = BacktestConfig(),
                 *, fit: bool = True, delisted: dict[str, dt.date] | None = None,
                 initial_holdings: np.ndarray | None = None, initial_cash: int | None = None,
                 name: str | None = None) -> BacktestResult:
    """Trade `strategy` on `panel` from `start` to `end` (dates; default the whole panel).

    The first execution is on the first bar >= start; its decision is made at the close of the
    bar before (so with `start` the first bar, the first decision is bar 0 and the first fill bar
    1). With `fit`, `strategy.fit(panel before start)` is called first: a strategy never learns
    from the span it is scored on. `initial_cash`/`initial_holdings` continue an account (used
    by walk-forward stitching); by default the account starts with `config.cash` in cash.
    """
    T = len(panel)
    if T < 2:
        raise ValueError("a backtest needs at least two bars")
    s = 0 if start is None else int(np.searchsorted(panel.dates, np.datetime64(_date(start), "D")))
    e = T - 1 if end is None else panel.index_of(_date(end))
    if s >= T or e < 0:
        raise ValueError(f"no bars between {start} and {end} (panel {panel.date(0)}..{panel.date(T - 1)})")
    t0 = max(s - 1, 0)  # the first decision bar
    if e <= t0:
        raise ValueError(f"the span {start}..{end} holds no bar to trade on")
    if fit and hasattr(strategy, "fit") and s > 0:
        strategy.fit(panel.rows(0, s))

    n = len(panel.symbols)
    label = name or strategy_name(strategy)
    rule = getattr(strategy, "rebalance", None) or config.rebalance
    if isinstance(rule, str) and rule not in REBALANCE_CHOICES:
        raise ValueError(f"{label}: rebalance {rule!r} is not one of {REBALANCE_CHOICES}")
    decide, matrix = _decider(strategy, panel)
    costs = config.costs

    inputs = AccountingInputs.build(panel.dates, panel.close, costs.market, config.sell_tax)
    close_ff, tax_rate = inputs.ref_price, inputs.sell_tax
    listed_from = first_bar_index(panel.close)
    delisted_at = delisting_index(panel.dates, panel.symbols, delisted)
    decisions = rebalance_mask(panel.dates, rule, t0)
    decisions[e:] = False  # a decision at e would execute after the end
    rows = np.arange(T)[:, None]
    tradable_at = (listed_from[None, :] <= rows) & (delisted_at[None, :] > rows + 1)
    ref_at = np.where(tradable_at, close_ff, np.nan)  # what orders may be sized on at each close
    if matrix is not None:
        # validated once, on the decision rows only (other rows are never read)
        rows_d = np.flatnonzero(decisions)
        m = matrix[rows_d]
        bad = ~np.isfinite(m).all(axis=1) | (m < -1e-12).any(axis=1) | (m.sum(axis=1) > 1 + 1e-9)
        if bad.any():
            t = int(rows_d[np.argmax(bad)])
            check_weights(matrix[t], n, f"{label} on {panel.date(t)}")  # raises, naming the problem
        matrix = np.where(tradable_at, np.clip(np.nan_to_num(matrix), 0.0, None), 0.0)
        over = matrix[rows_d].sum(axis=1) > 1 + 1e-9  # clipping -1e-12 dust can tip a sum over
        if over.any():
            check_targets(matrix[rows_d[np.argmax(over)]])  # raises as orders_for_targets would
    span = slice(t0 + 1, e + 1)
    quotes = QuoteTable.build(panel.dates[span], panel.open[span], panel.high[span], panel.low[span],
                              inputs.prev_close[span], costs)

    D = e - t0 + 1
    cash = int(config.cash if initial_cash is None else initial_cash)
    holdings = (np.zeros(n, dtype=np.int64) if initial_holdings is None
                else np.array(initial_holdings, dtype=np.int64, copy=True))
    if holdings.shape != (n,) or np.any(holdings < 0):
        raise ValueError(f"initial holdings must be {n} non-negative share counts")
    out_cash = np.zeros(D, dtype=np.int64)
    out_hold = np.zeros((D, n), dtype=np.int64)
    out_targets = np.full((D, n), np.nan)
    out_comm = np.zeros(D, dtype=np.int64)
    out_tax = np.zeros(D, dtype=np.int64)
    out_traded = np.zeros(D, dtype=np.float64)
    # at most one order per symbol and decision, one fill per order, one delisting per symbol
    fills = np.zeros((len(kernel.FILL_FIELDS), (D - 1) * n + n), dtype=np.int64)
    orders = np.zeros((len(kernel.ORDER_FIELDS), (D - 1) * n), dtype=np.int64)
    state = np.zeros(3, dtype=np.int64)
    state[kernel.CASH] = cash
    out_cash[0], out_hold[0] = cash, holdings
    weights = matrix if matrix is not None else np.zeros((T, n))

    def advance(t_from: int, t_to: int) -> None:
        """The accounting from the close of t_from to the close of t_to (market/accounting_kernel.py)."""
        kernel.advance(weights, decisions, ref_at, close_ff, tax_rate, quotes.buy, quotes.sell, quotes.status,
                       t0 + 1, delisted_at, t_from, t_to, t0, float(costs.commission_rate),
                       float(config.min_trade_value), float(config.cash_buffer), float(config.rebalance_band),
                       holdings, state, out_cash, out_hold, out_comm, out_tax, out_traded, fills, orders)

    decision_bars = np.flatnonzero(decisions[:e])
    if matrix is not None and not config.progress:
        out_targets[decision_bars - t0] = matrix[decision_bars]
        advance(t0, e)
    else:
        steps: Any = decision_bars
        if config.progress:
            from tqdm import tqdm

            steps = tqdm(decision_bars, desc=f"backtest {label}", unit="bar", leave=False)
        done = t0
        for t in steps:
            t = int(t)
            advance(done, t)  # bars without a decision: only delistings happen
            if matrix is None:
                raw = decide(t, int(state[kernel.CASH]), holdings.copy())
                weights[t] = check_targets(np.where(tradable_at[t], check_weights(raw, n, label), 0.0))
            out_targets[t - t0] = weights[t]
            advance(t, t + 1)
            done = t + 1
        advance(done, e)

    prices = close_ff[t0:e + 1]
    equity = out_cash + np.sum(out_hold * np.nan_to_num(prices), axis=1)
    return BacktestResult(
        dates=panel.dates[t0:e + 1], symbols=panel.symbols, equity=equity.astype(float), cash=out_cash,
        holdings=out_hold, prices=prices, targets=out_targets, commission=out_comm, tax=out_tax,
        traded_value=out_traded, fills=_fills_frame(fills[:, :state[kernel.N_FILLS]], panel), strategy=label,
        orders=_orders_frame(orders[:, :state[kernel.N_ORDERS]], panel))


def _symbol_names(panel: Panel, idx: np.ndarray) -> pl.Series:
    return pl.Series(list(panel.symbols), dtype=pl.String).gather(idx)


def _side_names(side: np.ndarray) -> pl.Series:
    return pl.Series(["sell", "buy"], dtype=pl.String).gather((side == BUY).astype(np.int64))


def _orders_frame(orders: np.ndarray, panel: Panel) -> pl.DataFrame:
    """The orders each decision made (before execution), one row per symbol and side; `orders`
    has the rows of `kernel.ORDER_FIELDS` (date of the decision bar, symbol, side, qty)."""
    t, idx, side, qty = orders
    return pl.DataFrame({"date": panel.dates[t], "symbol": _symbol_names(panel, idx), "side": _side_names(side),
                         "qty": qty})


def _fills_frame(fills: np.ndarray, panel: Panel) -> pl.DataFrame:
    """One row per fill; `fills` has the rows of `kernel.FILL_FIELDS`."""
    t, idx, side, qty, price, commission, tax = fills
    return pl.DataFrame({"date": panel.dates[t], "symbol": _symbol_names(panel, idx), "side": _side_names(side),
                         "qty": qty, "price": price, "commission": commission, "tax": tax})


def _date(value) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, np.datetime64):
        return value.astype("datetime64[D]").item()
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise ValueError(f"not a date (want YYYY-MM-DD): {value!r}") from exc
