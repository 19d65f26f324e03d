"""A SYNTHETIC intraday session from one daily bar, for rehearsing the real-time loop only.

The shipped data holds daily OHLCV bars, no ticks. To stream a session over the simulator's
WebSocket (H0STCNT0 trades, H0STASP0 order book) this module invents one, seeded and
reproducible, that is consistent with the bar and with KRX rules — and with nothing else: it is
not market microstructure, and no research result may be computed from it.

The path (`synth_session`):
* prints every `step_s` seconds of continuous trading, 09:00:00 … 15:20:00, plus the closing
  auction print at 15:30:00;
* it visits open → high → low → close or open → low → high → close (a coin flip per seed,
  symbol and day), the two extremes at random times; between these anchors a Brownian bridge
  scaled to the day's range, clipped into [low, high], snapped to the KRX tick grid of the day
  (market/krx.py). So the first print is the open, the last the close, the maximum the high and
  the minimum the low, exactly;
* adjusted (off-grid) bars are first snapped to the nearest grid price (monotone, so the bar's
  order is kept): the path then matches that snapped bar, which is what a real session would
  have printed;
* volume follows a U-shaped profile (heavier at the open and the close, opening and closing
  auction prints heavier still) with seeded noise, allocated in whole shares that sum exactly
  to the day's volume;
* each print trades at the touch: a rising (or first) print lifts the ask (ask1 = price, bid1 =
  one grid step below), a falling one hits the bid (bid1 = price, ask1 = one step above); the
  other nine levels follow the grid; their sizes are seeded.

Same (seed, symbol, day, bar) → the same path, on any machine.
"""
from __future__ import annotations

import datetime as dt
import itertools
import zlib
from dataclasses import dataclass

import numpy as np

from broker.kis.ws import (  # the one definition of the field order
    ASK_FIELDS,
    TRADE_FIELDS,
)
from market import krx

SYNTHETIC_NOTE = "SYNTHETIC intraday path from a daily bar (broker/sim/intraday.py): rehearsal only"
OPEN_TIME, LAST_CONTINUOUS, CLOSE_AUCTION = dt.time(9, 0), dt.time(15, 20), dt.time(15, 30)
BOOK_LEVELS = 10


@dataclass(frozen=True)
class Print:
    """One synthetic trade and the book right after it (prices KRW on the tick grid)."""
    time: dt.time
    price: int
    qty: int
    buyer_initiated: bool
    asks: tuple[int, ...]       # ask1 … ask10
    bids: tuple[int, ...]       # bid1 … bid10
    ask_sizes: tuple[int, ...]
    bid_sizes: tuple[int, ...]


def grid_bar(o: float, h: float, lo: float, c: float, day: dt.date,
             market: krx.Market | str = krx.Market.KOSPI) -> tuple[int, int, int, int]:
    """The bar on the tick grid (nearest grid price each; a no-op for a raw KRX bar)."""
    snapped = [int(krx.round_to_tick(x, day, market, "nearest")) for x in (o, h, lo, c)]
    return snapped[0], max(snapped), min(snapped), snapped[3]


def _grid_above(price: np.ndarray, day: dt.date, market) -> np.ndarray:
    """The next grid price above each price (the tick of the band it lands in)."""
    return krx.round_to_tick(price + 0.5, day, market, "up")


def _grid_below(price: np.ndarray, day: dt.date, market) -> np.ndarray:
    """The next grid price below each price; 0 (an empty level) under the lowest tick."""
    return krx.round_to_tick(np.maximum(price - 0.5, 0.5), day, market, "down")


def session_times(step_s: int = 30) -> list[dt.time]:
    if step_s < 1:
        raise ValueError(f"step_s must be >= 1 second, got {step_s}")
    start = dt.datetime.combine(dt.date(2000, 1, 1), OPEN_TIME)
    end = dt.datetime.combine(dt.date(2000, 1, 1), LAST_CONTINUOUS)
    n = int((end - start).total_seconds()) // step_s
    return [(start + dt.timedelta(seconds=k * step_s)).time() for k in range(n + 1)] + [CLOSE_AUCTION]


def _rng(seed: int, symbol: str, day: dt.date) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(symbol.encode("utf-8")), day.toordinal()])


def _bridge(rng: np.random.Generator, a: float, b: float, n: int, scale: float) -> np.ndarray:
    """n+1 points from a to b: a random walk with its end pinned (a Brownian bridge)."""
    if n <= 0:
        return np.array([b], dtype=float)
    walk = np.concatenate([[0.0], np.cumsum(rng.normal(0.0, 1.0, n))])
    t = np.arange(n + 1) / n
    pinned = walk - t * walk[-1]
    return a + (b - a) * t + pinned * scale / np.sqrt(n)


def _u_volume(rng: np.random.Generator, n: int, volume: int) -> np.ndarray:
    x = np.linspace(0.0, 1.0, n)
    weight = (1.0 + 3.0 * (2.0 * x - 1.0) ** 2) * rng.gamma(4.0, 0.25, n)
    weight[0] *= 15.0   # opening auction
    weight[-1] *= 25.0  # closing auction
    share = weight / weight.sum() * volume
    qty = np.floor(share).astype(np.int64)
    short = int(volume - qty.sum())
    if short:           # largest remainders get the missing shares: the sum is exact
        qty[np.argsort(-(share - qty), kind="stable")[:short]] += 1
    return qty


def synth_session(symbol: str, day: dt.date, bar: tuple, seed: int = 0, step_s: int = 30,
                  market: krx.Market | str = krx.Market.KOSPI) -> list[Print]:
    """The synthetic session of `bar` = (open, high, low, close, volume); see the module doc."""
    raw = [float(x) for x in bar[:4]]
    if not (0 < raw[2] <= min(raw[0], raw[3]) and max(raw[0], raw[3]) <= raw[1]):
        raise ValueError(f"{symbol} {day}: bar is not a bar (open {raw[0]}, high {raw[1]}, low {raw[2]}, "
                         f"close {raw[3]})")
    o, h, lo, c = grid_bar(*raw, day, market)
    volume = int(bar[4]) if len(bar) > 4 and bar[4] is not None and bar[4] == bar[4] else 0
    if volume < 0:
        raise ValueError(f"{symbol} {day}: negative volume {volume}")
    rng = _rng(seed, symbol, day)
    times = session_times(step_s)
    n = len(times)
    high_first = bool(rng.random() < 0.5)
    i1, i2 = sorted(rng.choice(np.arange(1, n - 1), size=2, replace=False)) if n > 3 else (1, 2)
    anchors = [(0, float(o)), (int(i1), float(h if high_first else lo)), (int(i2), float(lo if high_first else h)),
               (n - 1, float(c))]
    path = np.empty(n)
    scale = (h - lo) * 0.25   # wander about a quarter of the range between anchors
    for (ia, pa), (ib, pb) in itertools.pairwise(anchors):
        path[ia:ib + 1] = _bridge(rng, pa, pb, ib - ia, scale)
    path = np.clip(path, lo, h)
    prices = krx.round_to_tick(path, day, market, "nearest").astype(np.int64)
    prices = np.clip(prices, lo, h)   # lo and h are grid prices: clipping keeps the grid
    for i, p in anchors:
        prices[i] = int(p)
    qty = _u_volume(rng, n, volume)
    up = np.concatenate([[True], prices[1:] >= prices[:-1]])   # a rising (or first) print lifts the ask
    ask1 = np.where(up, prices, _grid_above(prices, day, market))
    bid1 = np.where(up, _grid_below(prices, day, market), prices)
    asks, bids = [ask1], [bid1]
    for _ in range(BOOK_LEVELS - 1):       # level by level for all prints at once (numpy)
        asks.append(_grid_above(asks[-1], day, market))
        bids.append(_grid_below(bids[-1], day, market))
    ask_px, bid_px = np.stack(asks, axis=1).tolist(), np.stack(bids, axis=1).tolist()
    sizes = (rng.integers(1, 200, (n, 2 * BOOK_LEVELS)) * 10).tolist()
    return [Print(times[k], int(prices[k]), int(qty[k]), bool(up[k]), tuple(ask_px[k]), tuple(bid_px[k]),
                  tuple(sizes[k][:BOOK_LEVELS]), tuple(sizes[k][BOOK_LEVELS:])) for k in range(n)]


_ASK_PX = [f"ASKP{i}" for i in range(1, BOOK_LEVELS + 1)]
_BID_PX = [f"BIDP{i}" for i in range(1, BOOK_LEVELS + 1)]
_ASK_QTY = [f"ASKP_RSQN{i}" for i in range(1, BOOK_LEVELS + 1)]
_BID_QTY = [f"BIDP_RSQN{i}" for i in range(1, BOOK_LEVELS + 1)]


def _sign(change: float) -> str:
    return "2" if change > 0 else "5" if change < 0 else "3"   # KIS: 2 up, 3 unchanged, 5 down


def tape(symbol: str, day: dt.date, prints: list[Print], prev_close: float | None) -> list[tuple[dt.time, str, str]]:
    """(time, H0STCNT0 record, H0STASP0 record) per print, in KIS's field order and formats
    (broker/kis/ws.py TRADE_FIELDS / ASK_FIELDS), with the running open/high/low, cumulative
    volume and traded value. `prev_close`: yesterday's close for the change fields."""
    base = float(prev_close) if prev_close else float(prints[0].price)
    out = []
    high = low = prints[0].price
    acml_vol = 0
    acml_value = 0
    ymd, hhmmss = day.strftime("%Y%m%d"), "%H%M%S"
    hi_t = lo_t = prints[0].time
    buys = sells = 0
    for p in prints:
        if p.price > high:
            high, hi_t = p.price, p.time
        if p.price < low:
            low, lo_t = p.price, p.time
        acml_vol += p.qty
        acml_value += p.qty * p.price
        buys += p.qty if p.buyer_initiated else 0
        sells += 0 if p.buyer_initiated else p.qty
        chg = p.price - base
        t = p.time.strftime(hhmmss)
        open_px = prints[0].price
        trade = dict.fromkeys(TRADE_FIELDS, "0")   # keys in field order: values() is the record
        trade.update({
            "MKSC_SHRN_ISCD": symbol, "STCK_CNTG_HOUR": t, "STCK_PRPR": str(p.price), "PRDY_VRSS_SIGN": _sign(chg),
            "PRDY_VRSS": str(round(chg)), "PRDY_CTRT": f"{chg / base * 100:.2f}",
            "WGHN_AVRG_STCK_PRC": f"{acml_value / acml_vol:.2f}" if acml_vol else str(p.price),
            "STCK_OPRC": str(open_px), "STCK_HGPR": str(high), "STCK_LWPR": str(low),
            "ASKP1": str(p.asks[0]), "BIDP1": str(p.bids[0]), "CNTG_VOL": str(p.qty), "ACML_VOL": str(acml_vol),
            "ACML_TR_PBMN": str(acml_value), "SELN_CNTG_SMTN": str(sells), "SHNU_CNTG_SMTN": str(buys),
            "CTTR": f"{buys / sells * 100 if sells else 0:.2f}", "CCLD_DVSN": "1" if p.buyer_initiated else "5",
            "SHNU_RATE": f"{buys / acml_vol * 100 if acml_vol else 0:.2f}", "OPRC_HOUR": "090000",
            "OPRC_VRSS_PRPR_SIGN": _sign(p.price - open_px), "OPRC_VRSS_PRPR": str(p.price - open_px),
            "HGPR_HOUR": hi_t.strftime(hhmmss), "HGPR_VRSS_PRPR_SIGN": _sign(p.price - high),
            "HGPR_VRSS_PRPR": str(p.price - high), "LWPR_HOUR": lo_t.strftime(hhmmss),
            "LWPR_VRSS_PRPR_SIGN": _sign(p.price - low), "LWPR_VRSS_PRPR": str(p.price - low), "BSOP_DATE": ymd,
            "NEW_MKOP_CLS_CODE": "20", "TRHT_YN": "N", "ASKP_RSQN1": str(p.ask_sizes[0]),
            "BIDP_RSQN1": str(p.bid_sizes[0]), "TOTAL_ASKP_RSQN": str(sum(p.ask_sizes)),
            "TOTAL_BIDP_RSQN": str(sum(p.bid_sizes)), "VOL_TNRT": "0.00", "PRDY_SMNS_HOUR_ACML_VOL_RATE": "0.00",
            "HOUR_CLS_CODE": "0", "MRKT_TRTM_CLS_CODE": ""})
        book = dict.fromkeys(ASK_FIELDS, "0")
        book.update({"MKSC_SHRN_ISCD": symbol, "BSOP_HOUR": t, "HOUR_CLS_CODE": "0",
                     "TOTAL_ASKP_RSQN": str(sum(p.ask_sizes)), "TOTAL_BIDP_RSQN": str(sum(p.bid_sizes)),
                     "ANTC_CNPR": "0", "ACML_VOL": str(acml_vol), "ANTC_CNTG_VRSS_SIGN": "3",
                     "ANTC_CNTG_PRDY_CTRT": "0.00", "STCK_DEAL_CLS_CODE": "0"})
        for names, values in ((_ASK_PX, p.asks), (_BID_PX, p.bids), (_ASK_QTY, p.ask_sizes), (_BID_QTY, p.bid_sizes)):
            book.update(zip(names, map(str, values)))
        out.append((p.time, "^".join(trade.values()), "^".join(book.values())))
    return out


class SessionTapes:
    """The synthetic sessions of replay days, built per symbol when first streamed and kept for
    the day (one seed for the whole run; each symbol-day draws its own stream from it)."""

    def __init__(self, seed: int = 0, step_s: int = 30, market: krx.Market | str = krx.Market.KOSPI):
        self.seed, self.step_s, self.market = seed, step_s, market
        self.times = session_times(step_s)
        self._day: dt.date | None = None
        self._tapes: dict[str, list[tuple[dt.time, str, str]]] = {}
        self._prints: dict[str, list[Print]] = {}

    def prints(self, day: dt.date, symbol: str, bar: tuple) -> list[Print]:
        """The symbol-day's path (what the simulator's orders trade against, SimServer.stream_session)."""
        if day != self._day:
            self._day, self._tapes, self._prints = day, {}, {}
        if symbol not in self._prints:
            self._prints[symbol] = synth_session(symbol, day, bar, self.seed, self.step_s, self.market)
        return self._prints[symbol]

    def records(self, day: dt.date, symbol: str, bar: tuple, prev_close: float | None) -> list[tuple[dt.time, str, str]]:
        prints = self.prints(day, symbol, bar)
        if symbol not in self._tapes:
            self._tapes[symbol] = tape(symbol, day, prints, prev_close)
        return self._tapes[symbol]
