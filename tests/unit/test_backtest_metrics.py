"""The project's metrics against empyrical-reloaded on the same daily returns, plus the
drawdown duration, hit rate and turnover by hand."""
import empyrical as ep
import numpy as np
import pytest

from backtest import metrics as M
from backtest.engine import run_backtest
from market.data import DataPaths, index_close, load_index, load_panel


@pytest.fixture(scope="module")
def returns():
    """A real strategy's daily returns and KOSPI200's on the same days (2018-2020)."""
    from strategies.baselines import EqualWeightRebalanced

    panel = load_panel(start="2018-01-01", end="2020-12-31")
    res = run_backtest(EqualWeightRebalanced(), panel, start="2018-03-02")
    bench = index_close(res.dates, load_index(DataPaths().path("index"), "KOSPI200"))
    return res, bench


def test_metrics_match_empyrical(returns):
    res, bench = returns
    r = res.returns
    b = bench[1:] / bench[:-1] - 1.0
    m = res.metrics(bench)
    assert m["annual_return"] == pytest.approx(ep.annual_return(r), rel=1e-9)
    assert m["annual_volatility"] == pytest.approx(ep.annual_volatility(r), rel=1e-9)
    assert m["sharpe"] == pytest.approx(ep.sharpe_ratio(r), rel=1e-9)
    assert m["sortino"] == pytest.approx(ep.sortino_ratio(r), rel=1e-9)
    assert m["calmar"] == pytest.approx(ep.calmar_ratio(r), rel=1e-9)
    assert m["max_drawdown"] == pytest.approx(ep.max_drawdown(r), rel=1e-9)
    assert m["max_drawdown"] < 0  # 2020's crash: a negative fraction
    assert m["beta"] == pytest.approx(ep.beta(r, b), rel=1e-9)
    assert m["information_ratio"] == pytest.approx(ep.excess_sharpe(r, b) * np.sqrt(252), rel=1e-9)
    assert m["tracking_error"] == pytest.approx(np.std(r - b, ddof=1) * np.sqrt(252), rel=1e-12)
    assert m["total_return"] == pytest.approx(ep.cum_returns_final(r), rel=1e-9)
    assert m["benchmark_total_return"] == pytest.approx(bench[-1] / bench[0] - 1, rel=1e-12)
    roll = M.rolling_sharpe(r, 63)
    ref = ep.roll_sharpe_ratio(r, 63)
    assert np.allclose(roll[62:], ref, rtol=1e-9)


def test_drawdown_duration_hit_rate_and_turnover_by_hand():
    equity = np.array([100, 110, 99, 105, 111, 100, 100, 120.0])
    # below the 110 peak for 2 bars (99, 105), then below 111 for 2 bars (100, 100)
    assert M.max_drawdown_duration(equity) == 2
    assert M.max_drawdown(equity) == pytest.approx(99 / 110 - 1)
    assert M.max_drawdown_duration([100, 90, 80, 85]) == 3  # never recovered: counts to the end
    r = M.daily_returns(equity)
    assert M.hit_rate(r) == pytest.approx(4 / 6)  # the flat day is not a hit or a miss
    m = M.compute(np.full(253, 1_000.0), traded_value=1_000.0 * 2 * 3)
    assert m["turnover"] == pytest.approx(3.0)  # the book turned over three times in one year
    assert m["sharpe"] == 0.0 and m["max_drawdown"] == 0.0


def test_summary_keeps_its_demo_keys():
    s = M.summary(np.array([100.0, 101.0, 102.0, 100.0]), traded_value=50.0, orders=3)
    assert set(s) == {"total_return", "annual_return", "annual_volatility", "sharpe", "max_drawdown",
                      "turnover", "orders", "days"}
    assert s["orders"] == 3 and s["days"] == 4 and s["total_return"] == pytest.approx(0.0)


def test_bad_metric_inputs_are_named():
    with pytest.raises(ValueError, match="two finite"):
        M.compute(np.array([100.0]))
    with pytest.raises(ValueError, match="benchmark has"):
        M.compute(np.array([100.0, 101.0]), benchmark=np.array([1.0, 2.0, 3.0]))
