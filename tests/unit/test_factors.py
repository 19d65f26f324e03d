"""Point-in-time fundamentals, market caps and factor z-scores."""
import datetime as dt

import numpy as np
import polars as pl
import pytest

from market.data import DataPaths, load_panel
from strategies.factors import FACTORS, FactorEngine, composite_scores, group_scores, winsorised_zscore
from strategies.fundamentals import Fundamentals, MarketCaps, ReportingLag


def _statements(rows):
    base = {k: 0.0 for k in ("revenue_q", "operating_income_q", "net_income_q", "net_income_owners_q")}
    out = []
    for sym, pe, rep, ni, eq in rows:
        out.append({"symbol": sym, "period_end": dt.datetime.fromisoformat(pe), "report": rep,
                    **base, "net_income_q": ni, "revenue_q": 10 * ni, "total_equity": eq})
    return pl.DataFrame(out)


def test_statement_is_invisible_before_its_reporting_lag():
    f = Fundamentals(_statements([("000001", "2019-12-31", "FY", 5.0, 100.0),
                                  ("000001", "2020-03-31", "Q1", 7.0, 110.0)]))
    # FY 2019 public on 2019-12-31 + 90 days = 2020-03-30; Q1 2020 on 2020-03-31 + 45 = 2020-05-15
    assert np.isnan(f.as_of("2020-03-29", ["000001"], ["total_equity"])["total_equity"][0])
    assert f.as_of("2020-03-30", ["000001"], ["total_equity"])["total_equity"][0] == 100.0
    assert f.as_of("2020-05-14", ["000001"], ["total_equity"])["total_equity"][0] == 100.0
    assert f.as_of("2020-05-15", ["000001"], ["total_equity"])["total_equity"][0] == 110.0
    assert f.available_date("000001", "2020-03-31") == dt.date(2020, 5, 15)


def test_reporting_lag_is_configurable_and_validated():
    f = Fundamentals(_statements([("000001", "2020-03-31", "Q1", 7.0, 110.0)]), ReportingLag(60, 120))
    assert np.isnan(f.as_of("2020-05-29", ["000001"], ["total_equity"])["total_equity"][0])
    assert f.as_of("2020-05-30", ["000001"], ["total_equity"])["total_equity"][0] == 110.0
    with pytest.raises(ValueError, match="lags"):
        ReportingLag(-1, 90)


def test_late_annual_report_does_not_hide_a_newer_quarter():
    # FY (lag 90) becomes public after the next Q1 (lag 45) only with a long FY lag; the newest
    # period among public rows is the one used
    f = Fundamentals(_statements([("000001", "2019-12-31", "FY", 5.0, 100.0),
                                  ("000001", "2020-03-31", "Q1", 7.0, 110.0)]), ReportingLag(45, 200))
    assert f.as_of("2020-05-20", ["000001"], ["total_equity"])["total_equity"][0] == 110.0


def test_shipped_fundamentals_never_show_a_statement_before_it_is_public():
    f = Fundamentals.load(DataPaths())
    sym = "005930"
    rows = f.frame.filter(pl.col("symbol") == sym).sort("period_end")
    for pe, avail in zip(rows["period_end"].to_list(), rows["available"].to_list()):
        seen = f.as_of(avail - dt.timedelta(days=1), [sym], ["period_end"])["period_end"][0]
        assert np.isnan(seen) or seen < np.datetime64(pe, "D").astype(float)
        seen = f.as_of(avail, [sym], ["period_end"])["period_end"][0]
        assert seen >= np.datetime64(pe, "D").astype(float)


def test_market_cap_snapshot_then_price_scaled_and_unknown_before():
    snap = pl.DataFrame({"date": [dt.date(2021, 1, 4)], "symbol": ["000001"], "close": [100.0],
                         "market_cap": [1e12]})
    caps = MarketCaps(snap)
    dates = np.array(["2020-12-30", "2021-01-04", "2021-01-05"], dtype="datetime64[D]")
    close = np.array([[90.0], [50.0], [55.0]])  # adjusted prices (e.g. after a later 2:1 split)
    assert np.isnan(caps.as_of(0, dates, ["000001"], close)[0])  # no snapshot yet: unknown
    assert caps.as_of(1, dates, ["000001"], close)[0] == 1e12
    assert caps.as_of(2, dates, ["000001"], close)[0] == pytest.approx(1.1e12)


def test_winsorised_zscore():
    x = np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 9, 1000, np.nan])
    z = winsorised_zscore(x, winsor=0.1)
    ok = np.isfinite(z)
    assert np.isnan(z[-1]) and ok.sum() == 10
    assert abs(z[ok].mean()) < 1e-12 and abs(z[ok].std() - 1) < 1e-12
    big = winsorised_zscore(np.r_[np.arange(99.0), 1e6], winsor=0.05)
    assert big[99] == big[98] and big[99] < 2.0  # the outlier was clipped to the 95% quantile
    assert np.all(np.isnan(winsorised_zscore(np.array([1.0, 2.0, np.nan]))))


def test_composite_treats_missing_as_neutral_and_reports_coverage():
    groups = {g: np.array([1.0, np.nan]) for g in ("value", "growth")}
    score, cov = composite_scores(groups, {"value": 1.0, "growth": 1.0})
    assert score[0] == 2.0 and score[1] == 0.0 and cov[0] == 1.0 and cov[1] == 0.0


@pytest.fixture(scope="module")
def real():
    paths = DataPaths()
    panel = load_panel(paths, start="2020-01-01", end="2022-06-30")
    return panel, Fundamentals.load(paths), MarketCaps.load(paths)


def test_factor_exposures_ignore_the_future(real):
    panel, fund, caps = real
    eng = FactorEngine(fund, caps)
    t = "2021-06-30"
    row = panel.index_of(t)
    full = eng.exposures(panel, row)
    cut = eng.exposures(panel.upto(t))
    # statements filed after t and snapshots after t removed entirely: nothing changes at t
    d = np.datetime64(t, "D")
    fut_fund = Fundamentals(fund.frame.filter(pl.col("available") <= dt.date(2021, 6, 30))
                            .drop([c for c in fund.frame.columns if c.endswith(("_ttm", "_1y")) or
                                   c in ("earnings_stability", "available")]))
    snap = pl.read_parquet(DataPaths().path("market_caps"), columns=["date", "symbol", "close", "market_cap"])
    fut_caps = MarketCaps(snap.filter(pl.col("date") <= dt.datetime(2021, 6, 30)))
    cut2 = FactorEngine(fut_fund, fut_caps).exposures(panel.upto(t))
    assert set(full) == set(FACTORS)
    for k in FACTORS:
        np.testing.assert_array_equal(full[k], cut[k], err_msg=k)
        np.testing.assert_array_equal(full[k], cut2[k], err_msg=k)
    assert np.isfinite(full["book_to_price"]).sum() > 30  # value factors exist once caps exist
    assert d == panel.dates[row] or panel.dates[row] < d


def test_value_factors_missing_before_the_first_snapshot(real):
    panel, fund, caps = real
    z = FactorEngine(fund, caps).exposures(panel.upto("2020-12-30"))
    assert np.all(np.isnan(z["book_to_price"])) and np.isfinite(z["roe"]).sum() > 30
    g = group_scores(z)
    assert np.all(np.isnan(g["value"])) and np.isfinite(g["profitability"]).sum() > 30
