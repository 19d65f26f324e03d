"""The one accounting: target weights → whole-share orders → fills → cash and holdings.

The paper broker, the backtester and the RL environment all call these two functions, so a
strategy is charged exactly the same in research and in paper trading. Orders decided on bar t
are executed here against bar t+1 (the caller passes t+1's bar); nothing in this module looks at
any other bar.

Rules (KIS_API.md §7, and the issue texts):
* Prices are snapped to the KRX tick grid of the execution date; cash and fees are whole KRW.
* Market orders fill at the open plus slippage (buys pay up, sells receive less).
* Limit orders fill only if the bar trades through the limit: at the open when the open is
  already better than the limit, otherwise at the limit price itself.
* A bar locked at a daily price limit (no range, at ±limit) trades for nobody in this model: a
  locked queue gives no assurance of a fill, so neither side fills (conservative).
* No bar that day (suspension, missing data) → nothing fills.
* Fills never go beyond the daily price limits; commission on both sides, tax on sells.
* Sells are executed before buys; sells are capped at the holding (no short selling); a buy
  that the cash cannot pay for is cut to the shares the cash affords (cash never negative).
* No partial fills from volume: the shipped data often lacks volume, so liquidity is assumed.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from market import krx

BUY, SELL = 1, -1


class FillStatus(IntEnum):
    FILLED = 0
    PARTIAL_CASH = 1   # buy cut to what the cash affords
    NO_BAR = 2         # no bar for the symbol that day (suspended or missing)
    LOCKED = 3         # bar locked at a daily price limit
    NOT_REACHED = 4    # limit order: the bar did not trade through the limit
    NO_CASH = 5        # buy: not even one share affordable
    NO_POSITION = 6    # sell: nothing held
    PARTIAL_POSITION = 7  # sell cut to the holding


@dataclass(frozen=True)
class CostModel:
    """Commission, tax market and slippage; slippage = ticks × tick + range_frac × (high − low)."""

    commission_rate: float = krx.DEFAULT_COMMISSION_RATE
    slippage_ticks: float = 0.0
    slippage_range_frac: float = 0.05
    market: krx.Market = krx.Market.KOSPI

    def __post_init__(self):
        for name in ("commission_rate", "slippage_ticks", "slippage_range_frac"):
            if getattr(self, name) < 0:
                raise ValueError(f"CostModel.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class Bar:
    """The execution bar for a set of symbols (arrays aligned with the order arrays)."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    prev_close: np.ndarray


@dataclass
class Execution:
    """Per-order results plus the account after all fills."""

    qty: np.ndarray         # filled shares (int64, >= 0)
    price: np.ndarray       # fill price in KRW on the tick grid (int64; 0 where nothing filled)
    commission: np.ndarray  # KRW (int64)
    tax: np.ndarray         # KRW (int64)
    status: np.ndarray      # FillStatus codes
    cash: int
    holdings: np.ndarray    # int64 per symbol

    @property
    def notional(self) -> np.ndarray:
        return self.qty * self.price


def _bar_terms(bar: Bar, on: dt.date, costs: CostModel):
    """What a bar fixes for every order on it, whatever its side: (status without NOT_REACHED,
    open, high, low with 1.0 where there is no bar, lower and upper price limits, slippage)."""
    o, h, lo, pc = (np.asarray(a, dtype=float) for a in (bar.open, bar.high, bar.low, bar.prev_close))
    status = np.full(o.shape, FillStatus.FILLED, dtype=np.int8)
    has_bar = ~(np.isnan(o) | np.isnan(h) | np.isnan(lo))
    status[~has_bar] = FillStatus.NO_BAR
    o, h, lo = np.where(has_bar, o, 1.0), np.where(has_bar, h, 1.0), np.where(has_bar, lo, 1.0)
    base = np.where(np.isnan(pc) | (pc <= 0), o, pc)

    lower, upper = krx.price_limits(base, on, costs.market)
    pct = krx.price_limit_pct(on)
    move = np.abs(o / base - 1.0)
    locked = has_bar & (h - lo <= 1e-9 * h) & (move >= pct - 0.005)
    status[locked] = FillStatus.LOCKED

    tick = krx.tick_size(o, on, costs.market)
    slip = costs.slippage_ticks * tick + costs.slippage_range_frac * (h - lo)
    return status, o, h, lo, lower, upper, slip


def _market_raw(is_buy, o, h, lo, slip):
    """A market order's price before the tick grid: open ± slippage, kept inside the bar's range."""
    return np.where(is_buy, np.minimum(o + slip, h), np.maximum(o - slip, lo))


def fill_prices(side: np.ndarray, limit: np.ndarray, bar: Bar, on: dt.date,
                costs: CostModel) -> tuple[np.ndarray, np.ndarray]:
    """Where each order would fill on this bar, ignoring cash: (price int64, status)."""
    side = np.asarray(side)
    status, o, h, lo, lower, upper, slip = _bar_terms(bar, on, costs)
    is_buy = side == BUY
    is_limit = ~np.isnan(limit)
    lim = np.where(is_limit, limit, 0.0)

    raw = _market_raw(is_buy, o, h, lo, slip)
    # limit orders: reachable only if the open is at/better than the limit or the bar crosses it
    reach_buy = (o <= lim) | (lo < lim)
    reach_sell = (o >= lim) | (h > lim)
    reach = np.where(is_buy, reach_buy, reach_sell)
    limit_px = np.where(is_buy, np.where(o <= lim, np.minimum(o + slip, lim), lim),
                        np.where(o >= lim, np.maximum(o - slip, lim), lim))
    raw = np.where(is_limit, limit_px, raw)
    status[is_limit & ~reach & (status == FillStatus.FILLED)] = FillStatus.NOT_REACHED

    price = np.where(is_buy, krx.round_to_tick(raw, on, costs.market, "up"),
                     krx.round_to_tick(raw, on, costs.market, "down"))
    # a buy limit is a ceiling and a sell limit a floor, even after snapping onto the grid
    price = np.where(is_limit & is_buy, np.minimum(price, lim), price)
    price = np.where(is_limit & ~is_buy, np.maximum(price, lim), price)
    price = np.clip(price, lower, upper).astype(np.int64)
    price[status != FillStatus.FILLED] = 0
    return price, status


@dataclass(frozen=True)
class QuoteTable:
    """Market-order fill prices and statuses for every (bar, symbol) of a history, both sides.

    Built from `fill_prices`' own terms (`_bar_terms`, `_market_raw`), so a lookup gives exactly
    what `fill_prices` computes for a market order on that bar; the backtester builds it once
    instead of once per bar.
    """

    buy: np.ndarray     # (T, N) int64 fill price of a market buy (0 where it cannot fill)
    sell: np.ndarray    # (T, N) int64 fill price of a market sell
    status: np.ndarray  # (T, N) FillStatus code of a market order

    @classmethod
    def build(cls, dates: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray,
              prev_close: np.ndarray, costs: CostModel = CostModel()) -> QuoteTable:
        """`prev_close[t]` is the base of bar t's price limits (the last close before t)."""
        d = np.asarray(dates, dtype="datetime64[D]")
        shape = np.shape(open_)
        buy = np.zeros(shape, dtype=np.int64)
        sell = np.zeros(shape, dtype=np.int64)
        status = np.zeros(shape, dtype=np.int8)
        # the rules depend on the date only through the tick-table and price-limit regimes, so
        # all bars of one regime are priced in a single call with that regime's first date
        py = d.astype(object)
        keys = np.asarray([(day >= krx.TICK_REFORM_DATE) * 2 + (day >= krx.LIMIT_WIDENED_DATE) for day in py],
                          dtype=np.int64)
        for key in np.unique(keys):
            rows = np.flatnonzero(keys == key)
            on = py[rows[0]]
            bar = Bar(open=open_[rows].ravel(), high=high[rows].ravel(), low=low[rows].ravel(),
                      prev_close=prev_close[rows].ravel())
            # `fill_prices` of a market order, with the side-independent terms computed once
            st, o, h, lo, lower, upper, slip = _bar_terms(bar, on, costs)
            unfilled = st != FillStatus.FILLED
            for out, is_buy, direction in ((buy, True, "up"), (sell, False, "down")):
                px = np.clip(krx.round_to_tick(_market_raw(is_buy, o, h, lo, slip), on, costs.market, direction),
                             lower, upper).astype(np.int64)
                px[unfilled] = 0
                out[rows] = px.reshape(len(rows), -1)
            status[rows] = st.reshape(len(rows), -1)
        return cls(buy=buy, sell=sell, status=status)

    def lookup(self, t: int, symbol_idx: np.ndarray, side: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.where(side == BUY, self.buy[t, symbol_idx], self.sell[t, symbol_idx]), self.status[t, symbol_idx]


def execute(symbol_idx: np.ndarray, side: np.ndarray, qty: np.ndarray, limit: np.ndarray, bar: Bar | None,
            on: dt.date, sell_tax_rate: float, cash: int, holdings: np.ndarray,
            costs: CostModel = CostModel(), sequential: bool = False,
            quotes: tuple[np.ndarray, np.ndarray] | None = None) -> Execution:
    """Execute a batch of orders against one bar. `bar` arrays are aligned with the orders.

    Sells first (freeing cash), then buys in the given order. Returns fills and the new account.

    The rule is sequential (each order sees the cash and holdings the previous ones left), but
    it is evaluated in whole-array steps where that gives the identical answer: sells on
    distinct symbols cannot interact, and the leading run of buys whose cumulative cost fits
    into the cash fills exactly as the loop would. Only buys from the first one the cash cannot
    pay for go through the order-by-order loop. `sequential=True` forces the loop for every
    order (the reference the batch path is tested against).

    `quotes` = (price, status) aligned with the orders, as `fill_prices` would return them for
    this bar (the backtester looks them up in a `QuoteTable` built once for the whole history
    instead of recomputing the tick grid and price limits on every bar); `bar` may then be None.
    """
    symbol_idx = np.asarray(symbol_idx, dtype=np.int64)
    side = np.asarray(side, dtype=np.int64)
    qty = np.asarray(qty, dtype=np.int64)
    limit = np.asarray(limit, dtype=float)
    if (qty <= 0).any():
        raise ValueError("order quantities must be positive whole shares")
    if not ((side == BUY) | (side == SELL)).all():
        raise ValueError("order side must be +1 (buy) or -1 (sell)")
    holdings = np.array(holdings, dtype=np.int64, copy=True)
    cash = int(cash)
    if quotes is None:
        if bar is None:
            raise ValueError("execute needs the bar (or precomputed quotes)")
        price, status = fill_prices(side, limit, bar, on, costs)
    else:
        price = np.array(quotes[0], dtype=np.int64, copy=True)
        status = np.array(quotes[1], dtype=np.int8, copy=True)
        if price.shape != qty.shape or status.shape != qty.shape:
            raise ValueError("quotes must be aligned with the orders")
    filled = np.where(status == FillStatus.FILLED, qty, 0)

    commission = np.zeros(len(qty), dtype=np.int64)
    tax = np.zeros(len(qty), dtype=np.int64)
    sells = np.flatnonzero((side == SELL) & (filled > 0))
    if len(sells) and not sequential and _distinct(symbol_idx[sells]):
        cash = _sells_batch(sells, symbol_idx, filled, status, price, commission, tax, holdings, cash,
                            sell_tax_rate, costs)
    else:
        cash = _sells_loop(sells, symbol_idx, filled, status, price, commission, tax, holdings, cash,
                           sell_tax_rate, costs)

    buys = np.flatnonzero((side == BUY) & (filled > 0))
    if len(buys) and not sequential:
        # the leading buys whose running cost fits into the cash fill in full, as in the loop
        notional = filled[buys] * price[buys]
        comm = krx.commission(notional, costs.commission_rate)
        running = np.cumsum(notional + comm)
        k = int(np.searchsorted(running, cash, side="right"))
        head = buys[:k]
        commission[head] = comm[:k]
        if _distinct(symbol_idx[head]):
            holdings[symbol_idx[head]] += filled[head]
        else:  # the same symbol bought twice in one batch
            np.add.at(holdings, symbol_idx[head], filled[head])
        if k:
            cash -= int(running[k - 1])
        buys = buys[k:]
    cash = _buys_loop(buys, symbol_idx, filled, status, price, commission, holdings, cash, costs)

    price = np.where(filled > 0, price, 0)
    return Execution(qty=filled, price=price, commission=commission, tax=tax, status=status,
                     cash=cash, holdings=holdings)


def _distinct(idx: np.ndarray) -> bool:
    # orders from orders_for_targets come in increasing symbol order: no sort needed then
    return len(idx) < 2 or bool((idx[1:] > idx[:-1]).all()) or len(np.unique(idx)) == len(idx)


def _sells_batch(sells, symbol_idx, filled, status, price, commission, tax, holdings, cash,
                 sell_tax_rate, costs) -> int:
    """Sells on distinct symbols: capped at the holding, all at once."""
    held = holdings[symbol_idx[sells]]
    want = filled[sells]
    none = held <= 0
    cut = ~none & (want > held)
    q = np.where(none, 0, np.minimum(want, held))
    status[sells[none]] = FillStatus.NO_POSITION
    status[sells[cut]] = FillStatus.PARTIAL_POSITION
    filled[sells] = q
    notional = q * price[sells]
    commission[sells] = krx.commission(notional, costs.commission_rate)
    tax[sells] = krx.sell_tax(notional, sell_tax_rate)
    holdings[symbol_idx[sells]] -= q
    return cash + int((notional - commission[sells] - tax[sells]).sum())


def _sells_loop(sells, symbol_idx, filled, status, price, commission, tax, holdings, cash,
                sell_tax_rate, costs) -> int:
    for i in sells:
        held = holdings[symbol_idx[i]]
        if held <= 0:
            filled[i], status[i] = 0, FillStatus.NO_POSITION
            continue
        if filled[i] > held:
            filled[i], status[i] = held, FillStatus.PARTIAL_POSITION
        notional = int(filled[i]) * int(price[i])
        commission[i] = krx.commission(notional, costs.commission_rate)
        tax[i] = krx.sell_tax(notional, sell_tax_rate)
        holdings[symbol_idx[i]] -= filled[i]
        cash += notional - int(commission[i]) - int(tax[i])
    return cash


def _buys_loop(buys, symbol_idx, filled, status, price, commission, holdings, cash, costs) -> int:
    for i in buys:
        px = int(price[i])
        q = int(filled[i])
        cost = q * px + krx.commission(q * px, costs.commission_rate)
        if cost > cash:
            q = int(cash // (px * (1 + costs.commission_rate)))
            while q > 0 and q * px + krx.commission(q * px, costs.commission_rate) > cash:
                q -= 1
            status[i] = FillStatus.PARTIAL_CASH if q > 0 else FillStatus.NO_CASH
            filled[i] = q
            if q == 0:
                continue
        commission[i] = krx.commission(q * px, costs.commission_rate)
        holdings[symbol_idx[i]] += q
        cash -= q * px + int(commission[i])
    return cash


def check_targets(weights: np.ndarray) -> np.ndarray:
    """Target weights as `orders_for_targets` takes them (NaN: 0); raises on shorts or leverage."""
    w = np.asarray(weights, dtype=float)
    nan = np.isnan(w)
    if nan.any():
        w = np.where(nan, 0.0, w)
    if w.size and w.min() < -1e-12:
        raise ValueError("target weights must be >= 0 (no short selling)")
    total = w.sum()
    if total > 1.0 + 1e-9:
        raise ValueError(f"target weights sum to {total:.6f} > 1 (no leverage)")
    return w


def orders_for_targets(weights: np.ndarray, holdings: np.ndarray, cash: int, ref_price: np.ndarray,
                       min_trade_value: float = 0.0, cash_buffer: float = 0.01
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole-share orders that move the account toward target weights of equity.

    `ref_price` is the last known close (decision time); symbols without a price are not traded.
    Buys are scaled down so that, at the reference price plus `cash_buffer`, they fit into the
    cash left after the sells. Returns (symbol_idx, side, qty) for orders with qty > 0, sells
    first, each side in symbol order.
    """
    w = check_targets(weights)
    holdings = np.asarray(holdings, dtype=np.int64)
    px = np.asarray(ref_price, dtype=float)
    priced = px > 0  # False for NaN too
    px_safe = np.where(priced, px, 1.0)
    equity = cash + float(np.where(priced, holdings * px_safe, 0.0).sum())
    target = np.where(priced, np.floor(w * equity / px_safe), holdings).astype(np.int64)
    delta = target - holdings
    if min_trade_value > 0:
        delta[np.abs(delta) * px_safe < min_trade_value] = 0
    sells = np.maximum(-delta, 0)
    buys = np.maximum(delta, 0)
    budget = cash + float((sells * px_safe).sum())
    need = float((buys * px_safe).sum()) * (1 + cash_buffer)
    if need > budget > 0:
        buys = np.floor(buys * (budget / need)).astype(np.int64)
    elif budget <= 0:
        buys[:] = 0
    si, bi = np.flatnonzero(sells), np.flatnonzero(buys)
    idx = np.concatenate([si, bi])
    side = np.repeat(np.array([SELL, BUY], dtype=np.int64), [len(si), len(bi)])
    qty = np.concatenate([sells[si], buys[bi]])
    return idx.astype(np.int64, copy=False), side, qty.astype(np.int64, copy=False)


# ---------------------------------------------------------------------------- inputs

def ffill_close(close: np.ndarray) -> np.ndarray:
    """Last known close at each bar (NaN before a symbol's first bar)."""
    close = np.asarray(close, dtype=float)
    t_idx = np.where(np.isnan(close), 0, np.arange(len(close))[:, None])
    np.maximum.accumulate(t_idx, axis=0, out=t_idx)
    return close[t_idx, np.arange(close.shape[1])]


def tax_rates_by_bar(dates: np.ndarray, market: krx.Market | str) -> np.ndarray:
    """The sell-tax rate for a fill on each bar: the rate of its T+2 settlement date."""
    d = np.asarray(dates, dtype="datetime64[D]")
    pos = np.arange(len(d)) + krx.SETTLEMENT_LAG_DAYS
    inside = pos < len(d)
    settle = np.empty_like(d)
    settle[inside] = d[pos[inside]]
    # beyond the known calendar weekdays stand in for trading days (as TradingCalendar.offset)
    if (~inside).any():
        settle[~inside] = np.busday_offset(d[-1], pos[~inside] - (len(d) - 1), roll="forward")
    return krx.sell_tax_rates(settle, market)


@dataclass(frozen=True)
class AccountingInputs:
    """What the accounting needs besides the orders, for every bar of a history (T, N):

    ref_price[t]   the last known close at t: what orders decided at the close of t are sized on
                   and what the book is marked at (NaN before a symbol's first bar);
    prev_close[t]  the base of bar t's daily price limits: the last known close before t;
    sell_tax[t]    the sell-tax rate of a fill on bar t, by its T+2 settlement date (0 when
                   `sell_tax` is off, only to compare with tools that cannot charge it).

    One helper so the backtester and the RL environment compute these the same way (they
    computed them differently before: raw vs last known closes, index vs calendar settlement).
    """

    ref_price: np.ndarray
    prev_close: np.ndarray
    sell_tax: np.ndarray

    @classmethod
    def build(cls, dates: np.ndarray, close: np.ndarray, market: krx.Market | str = krx.Market.KOSPI,
              sell_tax: bool = True) -> AccountingInputs:
        ref = ffill_close(close)
        prev = np.vstack([np.full((1, ref.shape[1]), np.nan), ref[:-1]])
        tax = tax_rates_by_bar(dates, market) if sell_tax else np.zeros(len(ref))
        return cls(ref_price=ref, prev_close=prev, sell_tax=np.asarray(tax, dtype=float))



# ---------------------------------------------------------------------------- batched form

@dataclass
class BatchExecution:
    """`execute` for E accounts × N symbols at once (market orders, at most one per symbol).

    Every (E, N) cell is one order of `orders_for_targets`: `side` is SELL, BUY or 0 (no order);
    the other per-order arrays are 0 where there is no order or nothing filled.
    """

    qty: np.ndarray         # (E, N) filled shares (int64, >= 0)
    side: np.ndarray        # (E, N) int64: SELL, BUY, or 0 for no order
    price: np.ndarray       # (E, N) fill price in KRW on the tick grid (int64; 0 where nothing filled)
    commission: np.ndarray  # (E, N) KRW (int64)
    tax: np.ndarray         # (E, N) KRW (int64)
    status: np.ndarray      # (E, N) FillStatus code of each order (FILLED where there is none)
    cash: np.ndarray        # (E,) int64
    holdings: np.ndarray    # (E, N) int64

    @property
    def notional(self) -> np.ndarray:
        return self.qty * self.price


def orders_for_targets_batch(weights: np.ndarray, holdings: np.ndarray, cash: np.ndarray,
                             ref_price: np.ndarray, min_trade_value: float = 0.0,
                             cash_buffer: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """`orders_for_targets` for E accounts at once: (sell_qty, buy_qty), each (E, N) int64.

    Row e is exactly what `orders_for_targets(weights[e], holdings[e], cash[e], ref_price[e])`
    returns, laid out densely (that function makes at most one order per symbol): the same
    floating-point expressions in the same order, so the whole shares agree to the share.
    """
    w = np.asarray(weights, dtype=float)
    nan = np.isnan(w)
    if nan.any():
        w = np.where(nan, 0.0, w)
    if w.size and w.min() < -1e-12:
        bad = int(np.argmax((w < -1e-12).any(axis=1)))
        raise ValueError(f"target weights must be >= 0 (no short selling); account {bad} has {w[bad].min()}")
    total = w.sum(axis=1)
    if (total > 1.0 + 1e-9).any():
        bad = int(np.argmax(total > 1.0 + 1e-9))
        raise ValueError(f"target weights sum to {total[bad]:.6f} > 1 (no leverage) for account {bad}")
    holdings = np.asarray(holdings, dtype=np.int64)
    cash_f = np.asarray(cash, dtype=np.int64).astype(float)
    px = np.asarray(ref_price, dtype=float)
    priced = px > 0  # False for NaN too
    px_safe = np.where(priced, px, 1.0)
    equity = cash_f + np.where(priced, holdings * px_safe, 0.0).sum(axis=1)
    target = np.where(priced, np.floor(w * equity[:, None] / px_safe), holdings).astype(np.int64)
    delta = target - holdings
    if min_trade_value > 0:
        delta[np.abs(delta) * px_safe < min_trade_value] = 0
    sells = np.maximum(-delta, 0)
    buys = np.maximum(delta, 0)
    budget = cash_f + (sells * px_safe).sum(axis=1)
    need = (buys * px_safe).sum(axis=1) * (1 + cash_buffer)
    scale = (need > budget) & (budget > 0)
    if scale.any():
        buys[scale] = np.floor(buys[scale] * (budget[scale] / need[scale])[:, None]).astype(np.int64)
    broke = budget <= 0
    if broke.any():
        buys[broke] = 0
    return sells, buys


def execute_batch(sell_qty: np.ndarray, buy_qty: np.ndarray, buy_price: np.ndarray, sell_price: np.ndarray,
                  quote_status: np.ndarray, sell_tax_rate: np.ndarray, cash: np.ndarray,
                  holdings: np.ndarray, costs: CostModel = CostModel()) -> BatchExecution:
    """`execute` of market orders for E accounts at once, each against its own execution bar.

    `buy_price`, `sell_price`, `quote_status` (E, N) are the market-order quotes of each
    account's execution bar (rows of a `QuoteTable`, i.e. what `fill_prices` gives); `sell_tax_rate`
    (E,) the dated rate of that bar. The rules are `execute`'s: sells first, capped at the
    holding; then buys in symbol order, the leading ones whose running cost fits into the cash in
    full, and from the first one that does not, order by order through `_buys_loop` itself (the
    same code the scalar path runs, so a cut buy is cut to the same share).
    """
    sell_qty = np.asarray(sell_qty, dtype=np.int64)
    buy_qty = np.asarray(buy_qty, dtype=np.int64)
    if (sell_qty < 0).any() or (buy_qty < 0).any():
        raise ValueError("order quantities must be non-negative whole shares")
    if ((sell_qty > 0) & (buy_qty > 0)).any():
        raise ValueError("at most one order per account and symbol (a sell or a buy)")
    holdings = np.array(holdings, dtype=np.int64, copy=True)
    cash = np.array(cash, dtype=np.int64, copy=True)
    status = np.array(quote_status, dtype=np.int8, copy=True)
    side = np.where(sell_qty > 0, SELL, np.where(buy_qty > 0, BUY, 0)).astype(np.int64)
    status[side == 0] = FillStatus.FILLED
    fillable = status == FillStatus.FILLED
    rate = costs.commission_rate

    # sells: distinct symbols, so all at once (as `_sells_batch`)
    want = np.where(fillable, sell_qty, 0)
    none = (want > 0) & (holdings <= 0)
    status[none] = FillStatus.NO_POSITION
    status[(want > 0) & ~none & (want > holdings)] = FillStatus.PARTIAL_POSITION
    q_sell = np.where(none, 0, np.minimum(want, holdings))
    notional_s = q_sell * np.asarray(sell_price, dtype=np.int64)
    comm_s = krx.commission(notional_s, rate)
    tax_s = np.floor(notional_s * np.asarray(sell_tax_rate, dtype=float)[:, None] + 1e-9).astype(np.int64)
    holdings -= q_sell
    cash += (notional_s - comm_s - tax_s).sum(axis=1)

    # buys: the fitting head at once, the rest through the scalar loop
    bpx = np.asarray(buy_price, dtype=np.int64)
    q_buy = np.where(fillable, buy_qty, 0)
    notional_b = q_buy * bpx
    comm_b = krx.commission(notional_b, rate)
    running = np.cumsum(notional_b + comm_b, axis=1)
    fits = running <= cash[:, None]
    head = np.where(fits, q_buy, 0)
    comm_b = np.where(fits, comm_b, 0)
    cash -= np.where(fits, notional_b + comm_b, 0).sum(axis=1)
    holdings += head
    tail = (q_buy > 0) & ~fits
    if tail.any():
        cols = np.arange(q_buy.shape[1], dtype=np.int64)
        for e in np.flatnonzero(tail.any(axis=1)):
            row_qty, row_status, row_comm, row_hold = q_buy[e], status[e], comm_b[e], holdings[e]
            cash[e] = _buys_loop(np.flatnonzero(tail[e]), cols, row_qty, row_status, bpx[e], row_comm,
                                 row_hold, int(cash[e]), costs)
    qty = q_sell + q_buy
    price = np.where(qty > 0, np.where(side == SELL, sell_price, bpx), 0).astype(np.int64)
    return BatchExecution(qty=qty, side=side, price=price, commission=comm_s + comm_b, tax=tax_s,
                          status=status, cash=cash, holdings=holdings)
