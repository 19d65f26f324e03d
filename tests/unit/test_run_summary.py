"""The terminal summary of `trader backtest` / `trader demo` (backtest/summary.py): its numbers are
the metrics' own (no second computation that could drift), the trade statistics follow from the
fills by hand, P&L per symbol adds up to the account, and --json is the same numbers rounded."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest

from backtest.cli import run_backtest_command
from backtest.summary import pct, render, rounded, trade_stats
from cluster.cli import main

PRICES, INDEX = "data/kr_stocks_daily.parquet", "data/kr_index_daily.parquet"
CASH = 100_000_000


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    out = tmp_path_factory.mktemp("ew")
    return run_backtest_command("equal-weight-monthly", PRICES, INDEX, "2022-07-01", "2023-06-30", str(out),
                                cash=CASH), out


def fills(*rows) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"date": pl.Date, "symbol": pl.Utf8, "side": pl.Utf8, "qty": pl.Int64,
                                      "price": pl.Int64, "commission": pl.Int64, "tax": pl.Int64}, orient="row")


def test_round_trips_holding_period_and_pnl_by_hand():
    days = np.array(["2023-01-02", "2023-01-03", "2023-01-04", "2023-01-05", "2023-01-06", "2023-01-09",
                     "2023-01-10"], dtype="datetime64[D]")
    d = [x.item() for x in days]
    f = fills((d[0], "000001", "buy", 10, 100, 1, 0),
              (d[2], "000001", "buy", 10, 110, 1, 0),
              (d[5], "000001", "sell", 15, 120, 2, 3),     # closes 10 @100 (5 bars) + 5 @110 (3 bars)
              (d[1], "000002", "buy", 4, 500, 1, 0),
              (d[6], "000002", "sell", 4, 480, 1, 4))       # a loss
    stats = trade_stats(f, days, {"000001": 5}, {"000001": 130.0, "000002": 470.0}, {"000001": "가나"})
    assert stats.round_trips == 2 and stats.wins == 1 and stats.win_rate == 0.5
    assert stats.avg_holding_days == pytest.approx((10 * 5 + 5 * 3 + 4 * 5) / 19)
    assert stats.commission == 6 and stats.tax == 7
    pnl = {x.symbol: x.pnl for x in stats.by_symbol}
    assert pnl["000001"] == 15 * 120 - 10 * 100 - 10 * 110 - 1 - 1 - 2 - 3 + 5 * 130
    assert pnl["000002"] == 4 * 480 - 4 * 500 - 1 - 1 - 4
    assert [x.symbol for x in stats.by_symbol] == ["000001", "000002"] and stats.by_symbol[0].name == "가나"


def test_a_sell_that_beats_the_price_but_not_the_costs_is_a_loss():
    days = np.array(["2023-01-02", "2023-01-03"], dtype="datetime64[D]")
    f = fills((dt.date(2023, 1, 2), "000001", "buy", 1, 1000, 0, 0),
              (dt.date(2023, 1, 3), "000001", "sell", 1, 1002, 1, 2))
    assert trade_stats(f, days, {}, {}).wins == 0


def test_summary_numbers_are_the_metrics(outcome):
    result, out = outcome
    m, s = result.metrics, result.summary
    on_disk = json.loads((out / "metrics.json").read_text())
    strategy, kospi, ew = s.rows
    assert (strategy.label, kospi.label, ew.label) == ("equal-weight-monthly", "KOSPI200", "equal-weight")
    for key in ("total_return", "annual_return", "annual_volatility", "sharpe", "max_drawdown"):
        assert strategy.metrics[key] == m[key] == pytest.approx(on_disk[key], rel=1e-12)
    # the KOSPI200 row (index buy-and-hold through the engine) is metrics.json's benchmark
    assert kospi.metrics["total_return"] == pytest.approx(m["benchmark_total_return"], rel=1e-9)
    # the same strategy through the same engine: the equal-weight row cannot differ from the run
    assert ew.metrics["total_return"] == pytest.approx(m["total_return"], rel=1e-12)
    assert s.trades.commission + s.trades.tax == m["costs"]
    assert s.final_equity == m["final_equity"] and s.starting_cash == CASH
    text = render(s)
    for key in ("total_return", "annual_return", "max_drawdown"):
        assert pct(m[key], signed=key != "max_drawdown") in text
    assert f"{m['sharpe']:.2f}" in text and f"₩{int(m['costs']):,}" in text


def test_years_chain_into_the_total_and_symbols_add_up_to_the_account(outcome):
    s = outcome[0].summary
    assert [y for y, _ in s.years] == [2022, 2023]
    for i, row in enumerate(s.rows):
        chained = np.prod([1 + vals[i] for _, vals in s.years]) - 1
        assert chained == pytest.approx(row.metrics["total_return"], rel=1e-9)
    months = [v for row in s.month_table for v in row if v is not None]
    assert len(months) == 12 and np.prod([1 + v for v in months]) - 1 == pytest.approx(s.rows[0].metrics
                                                                                        ["total_return"])
    total_pnl = sum(x.pnl for x in s.trades.by_symbol)
    assert abs(total_pnl - (s.final_equity - CASH)) <= len(s.trades.by_symbol)  # whole won per symbol
    assert all(x.name for x in s.trades.by_symbol)  # names ship in the price file


def test_json_output_is_the_same_numbers_rounded(tmp_path, capsys):
    rc = main(["backtest", "--strategy", "equal-weight-monthly", "--prices", PRICES, "--index", INDEX,
               "--start", "2023-01-02", "--end", "2023-03-31", "--out", str(tmp_path), "--json"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert printed["metrics"]["total_return"] == round(on_disk["total_return"], 6)
    assert printed["metrics"]["costs"] == round(on_disk["costs"]) and isinstance(printed["metrics"]["costs"], int)
    assert printed["summary"]["rows"][0]["sharpe"] == round(on_disk["sharpe"], 6)
    assert set(printed["summary"]["months"]["2023"]) >= {"Jan", "Feb", "Mar"}
    assert printed["files"]["metrics"] == str(tmp_path / "metrics.json")


def test_rounding_for_people():
    assert rounded({"r": 0.19024346000000003, "krw": 2_241_304.0000001, "nan": float("nan"),
                    "n": np.int64(3), "xs": [np.float64(1.23456789)]}) == \
        {"r": 0.190243, "krw": 2_241_304, "nan": None, "n": 3, "xs": [1.234568]}


def test_the_summary_is_plain_python():
    """backtest/ is a plain room: building and printing a summary imports no Ray, training or serving."""
    import subprocess
    import sys

    code = ("import sys, backtest.summary, backtest.cli, market.data; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'training', 'serving', 'actors'}))")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]"
