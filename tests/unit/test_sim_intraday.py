"""The simulator's synthetic intraday session: consistent with the real daily bar it comes from
(open/high/low/close exactly, volume summed exactly), on the KRX tick grid, U-shaped volume, and
the same seed giving the same path."""
from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from broker.kis.ws import parse_frame
from broker.sim.intraday import (
    CLOSE_AUCTION,
    OPEN_TIME,
    grid_bar,
    session_times,
    synth_session,
    tape,
)
from market import krx
from market.data import DataPaths, load_prices


@pytest.fixture(scope="module")
def real_bars() -> list[tuple[str, dt.date, tuple]]:
    """Real shipped KRX bars with volume: 30 raw (on the grid) and 10 adjusted (off the grid)."""
    df = load_prices(DataPaths().path("prices"), start="2023-02-01", end="2023-12-31").drop_nulls("volume")
    rows = [(r["symbol"], r["date"], (r["open"], r["high"], r["low"], r["close"], r["volume"]))
            for r in df.filter(pl.col("volume") > 0).sample(600, seed=5).iter_rows(named=True)]
    on = [r for r in rows if all(krx.on_tick_grid(x, r[1]) for x in r[2][:4])]
    off = [r for r in rows if not all(krx.on_tick_grid(x, r[1]) for x in r[2][:4])]
    assert len(on) >= 30 and len(off) >= 10, "the sample must hold both kinds of bars"
    return on[:30] + off[:10]


def test_path_hits_the_bar_exactly_on_the_grid_with_all_the_volume(real_bars):
    times = session_times(30)
    for symbol, day, bar in real_bars:
        prints = synth_session(symbol, day, bar, seed=11)
        o, h, lo, c = grid_bar(*bar[:4], day)
        if all(krx.on_tick_grid(x, day) for x in bar[:4]):
            assert (o, h, lo, c) == tuple(int(x) for x in bar[:4])   # a raw bar is kept as it is
        prices = [p.price for p in prints]
        assert prices[0] == o and prices[-1] == c and max(prices) == h and min(prices) == lo, (symbol, day)
        assert sum(p.qty for p in prints) == int(bar[4]) and all(p.qty >= 0 for p in prints)
        assert [p.time for p in prints] == times and times[0] == OPEN_TIME and times[-1] == CLOSE_AUCTION
        asks, bids = np.array([p.asks for p in prints]), np.array([p.bids for p in prints])
        assert krx.on_tick_grid(np.array(prices), day).all()
        assert krx.on_tick_grid(asks, day).all() and krx.on_tick_grid(bids, day).all()
        assert (bids[:, 0] < asks[:, 0]).all()
        assert all(p.price in (p.bids[0], p.asks[0]) for p in prints)
        # the touch is one grid step wide: nothing on the grid lies between bid1 and ask1
        assert (krx.round_to_tick(bids[:, 0] + 0.5, day, direction="up") == asks[:, 0]).all()
        assert (np.diff(asks, axis=1) > 0).all() and (np.diff(bids, axis=1) < 0).all()


def test_same_seed_same_path_and_seeds_differ(real_bars):
    symbol, day, bar = real_bars[0]
    a, b = synth_session(symbol, day, bar, seed=3), synth_session(symbol, day, bar, seed=3)
    assert a == b
    other = synth_session(symbol, day, bar, seed=4)
    assert [p.price for p in other] != [p.price for p in a]
    # the stream of each symbol-day is its own: another symbol with the same bar draws another path
    assert [p.price for p in synth_session("999999", day, bar, seed=3)] != [p.price for p in a]


def test_volume_is_u_shaped(real_bars):
    first = last = middle = 0
    for symbol, day, bar in real_bars:
        qty = np.array([p.qty for p in synth_session(symbol, day, bar, seed=1)])[1:-1]  # without the auctions
        first, last, middle = first + qty[:60].sum(), last + qty[-60:].sum(), middle + qty[330:390].sum()
    assert first > 1.5 * middle and last > 1.5 * middle


def test_tape_is_kis_frames_with_running_totals(real_bars):
    symbol, day, bar = real_bars[1]
    prints = synth_session(symbol, day, bar, seed=2)
    rows = tape(symbol, day, prints, prev_close=bar[3] * 0.99)
    trades = [parse_frame(f"0|H0STCNT0|001|{t}").records[0] for _, t, _ in rows]
    books = [parse_frame(f"0|H0STASP0|001|{b}").records[0] for _, _, b in rows]
    assert [int(r["STCK_PRPR"]) for r in trades] == [p.price for p in prints]
    assert [int(r["CNTG_VOL"]) for r in trades] == [p.qty for p in prints]
    assert int(trades[-1]["ACML_VOL"]) == int(bar[4]) and int(trades[-1]["STCK_HGPR"]) == max(p.price for p in prints)
    highs = [int(r["STCK_HGPR"]) for r in trades]
    assert highs == list(np.maximum.accumulate([p.price for p in prints]))     # never ahead of the tape
    assert all(r["BSOP_DATE"] == day.strftime("%Y%m%d") and r["MKSC_SHRN_ISCD"] == symbol for r in trades)
    assert [int(b["ASKP1"]) for b in books] == [int(t["ASKP1"]) for t in trades]
    assert trades[-1]["STCK_CNTG_HOUR"] == "153000"


def test_a_bar_that_is_not_a_bar_is_refused():
    with pytest.raises(ValueError, match="not a bar"):
        synth_session("005930", dt.date(2023, 6, 1), (70_000, 69_000, 68_000, 68_500, 1000))
