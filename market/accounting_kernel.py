"""The backtester's compiled form of the one accounting: target weights → orders → fills, bar by bar.

`advance` runs `orders_for_targets` at the close of each decision bar t and `execute` (market
orders, prices from a `QuoteTable`) on bar t+1, then closes delisted positions, for a stretch of
bars in one call: the per-bar numpy call overhead of the two scalar functions was most of a
10-year daily backtest's time (issue 12). The rules are exactly those of market/accounting.py,
written as loops over the symbols; tests/unit/test_accounting_kernel.py proves the result equal
to the scalar functions fill for fill and won for won. Floating-point sums are numpy's own
pairwise summation (`_pairwise_sum`), so equity, budgets and hence whole shares agree to the
last bit, not merely to rounding.

Every function lives in this one file on purpose: numba's on-disk cache (`cache=True`) is
invalidated by a change of the file a function is defined in, not of the files its callees are
in, so a kernel split over modules could run a stale compiled callee.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from market.accounting import BUY, SELL, FillStatus

_FILLED = np.int8(FillStatus.FILLED)

# rows of the `fills` and `orders` output buffers (one column per fill or order)
FILL_FIELDS = ("t", "symbol_idx", "side", "qty", "price", "commission", "tax")
ORDER_FIELDS = ("t", "symbol_idx", "side", "qty")
# `state`: the account's cash and how many columns of `fills` / `orders` are written
CASH, N_FILLS, N_ORDERS = 0, 1, 2


@njit(cache=True, error_model="numpy")
def _block_sum(a, lo, n):
    """numpy's pairwise sum of a block of n <= 128: 8 running sums, combined as a tree."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        k = lo + i
        r0 += a[k]
        r1 += a[k + 1]
        r2 += a[k + 2]
        r3 += a[k + 3]
        r4 += a[k + 4]
        r5 += a[k + 5]
        r6 += a[k + 6]
        r7 += a[k + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True, error_model="numpy")
def _pairwise_sum(a, lo, n):
    """`a[lo:lo + n].sum()` as numpy computes it: blocks of <= 128, halved (to multiples of 8)
    until they fit, the halves added. numpy recurses; this walks the same tree with a stack,
    because numba cannot reload a recursive function from its on-disk cache."""
    if n <= 128:
        return _block_sum(a, lo, n)
    seg_lo = np.empty(64, dtype=np.int64)
    seg_n = np.empty(64, dtype=np.int64)
    phase = np.empty(64, dtype=np.int64)   # 0: left half next, 1: right half next, 2: add them
    values = np.empty(64)
    seg_lo[0], seg_n[0], phase[0] = lo, n, 0
    top, nv = 1, 0
    while top:
        s_lo, s_n = seg_lo[top - 1], seg_n[top - 1]
        if s_n <= 128:
            values[nv] = _block_sum(a, s_lo, s_n)
            nv += 1
            top -= 1
            continue
        half = s_n // 2
        half -= half % 8
        if phase[top - 1] == 0:
            phase[top - 1] = 1
            seg_lo[top], seg_n[top], phase[top] = s_lo, half, 0
            top += 1
        elif phase[top - 1] == 1:
            phase[top - 1] = 2
            seg_lo[top], seg_n[top], phase[top] = s_lo + half, s_n - half, 0
            top += 1
        else:
            values[nv - 2] = values[nv - 2] + values[nv - 1]
            nv -= 1
            top -= 1
    return values[0]


@njit(cache=True, error_model="numpy")
def _whole_won(notional, rate):
    """`krx.commission` / `krx.sell_tax`: whole KRW, fractions of a won truncated."""
    return np.int64(np.floor(float(notional) * rate + 1e-9))


@njit(cache=True, error_model="numpy")
def _size_orders(w, holdings, cash, px, min_trade_value, cash_buffer, sells, buys, scratch):
    """`orders_for_targets` into dense per-symbol `sells` / `buys` (the same expressions)."""
    n = holdings.shape[0]
    for j in range(n):
        scratch[j] = holdings[j] * px[j] if px[j] > 0 else 0.0
    equity = float(cash) + _pairwise_sum(scratch, 0, n)
    for j in range(n):
        priced = px[j] > 0  # False for NaN too
        px_safe = px[j] if priced else 1.0
        delta = (np.int64(np.floor(w[j] * equity / px_safe)) if priced else holdings[j]) - holdings[j]
        if min_trade_value > 0 and abs(delta) * px_safe < min_trade_value:
            delta = 0
        sells[j] = max(-delta, 0)
        buys[j] = max(delta, 0)
    for j in range(n):
        scratch[j] = sells[j] * (px[j] if px[j] > 0 else 1.0)
    budget = float(cash) + _pairwise_sum(scratch, 0, n)
    for j in range(n):
        scratch[j] = buys[j] * (px[j] if px[j] > 0 else 1.0)
    need = _pairwise_sum(scratch, 0, n) * (1 + cash_buffer)
    if need > budget and budget > 0:
        for j in range(n):
            buys[j] = np.int64(np.floor(buys[j] * (budget / need)))
    elif budget <= 0:
        for j in range(n):
            buys[j] = 0


@njit(cache=True, error_model="numpy")
def _book_sell(u, j, q, px, commission_rate, tax_rate, holdings, fills, nf):
    """Sell `q` shares of symbol j at `px` on bar u: the holding, the fill in column `nf`, and
    (proceeds net of commission and tax, commission, tax, notional). One home for a market sell
    and a delisting's close-out, which are booked the same way."""
    notional = q * px
    comm = _whole_won(notional, commission_rate)
    tax = _whole_won(notional, tax_rate)
    holdings[j] -= q
    fills[0, nf], fills[1, nf], fills[2, nf], fills[3, nf] = u, j, SELL, q
    fills[4, nf], fills[5, nf], fills[6, nf] = px, comm, tax
    return notional - comm - tax, comm, tax, notional


@njit(cache=True, error_model="numpy")
def advance(weights, decisions, ref_at, close_ff, tax_rate, quote_buy, quote_sell, quote_status, quote_first,
            delisted_at, t_from, t_to, t0, commission_rate, min_trade_value, cash_buffer, rebalance_band,
            holdings, state, out_cash, out_hold, out_comm, out_tax, out_traded, fills, orders):
    """Step the account from the close of `t_from` to the close of `t_to` (decisions t_from..t_to-1).

    At a decision bar t (`decisions[t]`): orders for `weights[t]` sized on `ref_at[t]` (NaN:
    not tradable), with the rebalance band as a floor on the trade value; executed on bar
    u = t+1 at the quotes of row u - `quote_first` (sells first, capped at the holding, then
    buys in symbol order, cut to what the cash affords). On every bar u, positions in symbols
    delisted at u are closed at `close_ff[u]`. Row u - `t0` of the out arrays gets the account
    at the close of u; fills and orders are appended to their buffers. `holdings` and `state`
    are updated in place.
    """
    n = holdings.shape[0]
    cash = state[CASH]
    nf, no = state[N_FILLS], state[N_ORDERS]
    sells = np.zeros(n, dtype=np.int64)
    buys = np.zeros(n, dtype=np.int64)
    scratch = np.zeros(n)
    for t in range(t_from, t_to):
        u = t + 1
        i = u - t0
        comm_day, tax_day, traded_day, filled_any = 0, 0, 0, False
        if decisions[t]:
            min_trade = min_trade_value
            if rebalance_band > 0:
                for j in range(n):
                    scratch[j] = holdings[j] * (0.0 if np.isnan(ref_at[t, j]) else ref_at[t, j])
                band = rebalance_band * (float(cash) + _pairwise_sum(scratch, 0, n))
                if band > min_trade:
                    min_trade = band
            _size_orders(weights[t], holdings, cash, ref_at[t], min_trade, cash_buffer, sells, buys, scratch)
            for j in range(n):
                if sells[j] > 0:
                    orders[0, no], orders[1, no], orders[2, no], orders[3, no] = t, j, SELL, sells[j]
                    no += 1
            for j in range(n):
                if buys[j] > 0:
                    orders[0, no], orders[1, no], orders[2, no], orders[3, no] = t, j, BUY, buys[j]
                    no += 1
            r = u - quote_first
            rate = tax_rate[u]
            for j in range(n):
                if sells[j] <= 0 or quote_status[r, j] != _FILLED or holdings[j] <= 0:
                    continue
                net, comm, tax, notional = _book_sell(u, j, min(sells[j], holdings[j]), quote_sell[r, j],
                                                      commission_rate, rate, holdings, fills, nf)
                cash += net
                nf += 1
                comm_day += comm
                tax_day += tax
                traded_day += notional
                filled_any = True
            for j in range(n):
                if buys[j] <= 0 or quote_status[r, j] != _FILLED:
                    continue
                px = quote_buy[r, j]
                q = buys[j]
                if q * px + _whole_won(q * px, commission_rate) > cash:
                    q = np.int64(cash // (px * (1 + commission_rate)))
                    while q > 0 and q * px + _whole_won(q * px, commission_rate) > cash:
                        q -= 1
                    if q == 0:
                        continue
                comm = _whole_won(q * px, commission_rate)
                holdings[j] += q
                cash -= q * px + comm
                fills[0, nf], fills[1, nf], fills[2, nf], fills[3, nf] = u, j, BUY, q
                fills[4, nf], fills[5, nf], fills[6, nf] = px, comm, 0
                nf += 1
                comm_day += comm
                traded_day += q * px
                filled_any = True
        if filled_any:
            out_comm[i] = comm_day
            out_tax[i] = tax_day
            out_traded[i] = float(traded_day)
        # delisting: the position is closed at the last known close, commission and tax charged
        gone_comm, gone_tax, gone_value, gone_any = 0, 0, 0, False
        for j in range(n):
            if delisted_at[j] != u or holdings[j] <= 0:
                continue
            px = np.int64(0) if np.isnan(close_ff[u, j]) else np.int64(close_ff[u, j])
            net, comm, tax, notional = _book_sell(u, j, holdings[j], px, commission_rate, tax_rate[u],
                                                  holdings, fills, nf)
            cash += net
            nf += 1
            gone_comm += comm
            gone_tax += tax
            gone_value += notional
            gone_any = True
        if gone_any:
            out_comm[i] += gone_comm
            out_tax[i] += gone_tax
            out_traded[i] += float(gone_value)
        out_cash[i] = cash
        for j in range(n):
            out_hold[i, j] = holdings[j]
    state[CASH], state[N_FILLS], state[N_ORDERS] = cash, nf, no
