"""Dashboard data: read-only journal reads, equity/drawdown/benchmark arithmetic, payload parsing."""
from __future__ import annotations

import datetime as dt
import sqlite3

import numpy as np
import pandas as pd
import pytest

from broker.journal import Journal
from dashboard import data


def _journal(path):
    j = Journal(path, run_id="t")
    for day, eq, bench in [(dt.date(2023, 12, 26), 100.0, 300.0), (dt.date(2023, 12, 27), 110.0, 306.0),
                           (dt.date(2023, 12, 28), 99.0, 303.0)]:
        j.record_account(day, 10, eq, {"005930": 1}, bench)
    j.record_decision(dt.date(2023, 12, 27), {
        "targets": {"005930": 0.5}, "regime": {"bull": 0.6, "bear": 0.1, "sideways": 0.3},
        "agents": {"technical": {"weight": 0.7, "targets": {"005930": 0.5, "000660": 0.2}},
                   "factor": {"weight": 0.3, "targets": {"000660": 1.0}}},
        "risk": {"var": 0.012, "cvar": 0.018, "budget": 0.02, "state": "ACTIVE"}})
    j.close()


def test_snapshot_curve_drawdown_and_benchmark(tmp_path):
    _journal(tmp_path / "j.sqlite")
    snap = data.read_snapshot(tmp_path / "j.sqlite")
    acct = snap.account
    assert list(acct["drawdown"].round(6)) == [0.0, 0.0, round(99 / 110 - 1, 6)]
    assert list(acct["bench_equity"]) == pytest.approx([100.0, 102.0, 101.0])  # KOSPI200 from the same start
    assert np.isnan(acct["pnl"].iloc[0]) and list(acct["pnl"].iloc[1:]) == [10.0, -11.0]
    assert data.regime_of(snap.latest_decision) == {"bull": 0.6, "bear": 0.1, "sideways": 0.3}
    assert data.risk_of(snap.latest_decision) == {"var": 0.012, "cvar": 0.018, "budget": 0.02, "state": "ACTIVE"}
    assert data.targets_of(snap.latest_decision) == {"005930": 0.5}


def test_reads_are_read_only(tmp_path):
    from broker.journal import Journal

    _journal(tmp_path / "j.sqlite")
    reader = Journal(tmp_path / "j.sqlite", readonly=True)   # what the dashboard reads through
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.query("DELETE FROM account")
    reader.close()
    with pytest.raises(data.JournalMissing, match="no journal"):
        data.read_snapshot(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()


def test_agent_weights_and_own_target_returns():
    decisions = [{"day": "2023-12-27", "agents": {"technical": {"weight": 0.7, "targets": {"A": 0.5, "B": 0.2}},
                                                  "factor": {"weight": 0.3, "targets": {"B": 1.0}}}},
                 {"day": "2023-12-28", "agents": {"technical": {"weight": 0.6, "targets": {"A": 1.0}}}}]
    closes = pd.DataFrame({"A": [100.0, 110.0], "B": [50.0, 45.0]},
                          index=pd.to_datetime(["2023-12-27", "2023-12-28"]))
    rets = data.agent_daily_returns(decisions, closes)
    # 27th: technical 0.5*10% + 0.2*(-10%) = 3%; factor -10%; the 28th has no next bar yet
    assert list(rets.index) == ["2023-12-27"]
    assert rets.loc["2023-12-27", "technical"] == pytest.approx(0.03)
    assert rets.loc["2023-12-27", "factor"] == pytest.approx(-0.10)
    perf = data.agent_performance(decisions, closes).set_index("agent")
    assert perf.loc["technical", "weight"] == 0.6 and np.isnan(perf.loc["factor", "weight"])
    assert perf.loc["factor", "return_20d"] == pytest.approx(-0.10)


def test_mlflow_absent_store_is_reported_not_created(tmp_path):
    uri = f"sqlite:///{tmp_path / 'none.db'}"
    out = data.mlflow_overview(uri)
    assert "no MLflow store" in out["error"] and out["runs"] == [] and out["models"] == []
    assert not (tmp_path / "none.db").exists()


def test_positions_orders_and_fills_carry_the_stock_names(tmp_path):
    from market.data import stock_names

    _journal(tmp_path / "j.sqlite")
    snap = data.read_snapshot(tmp_path / "j.sqlite")
    names = stock_names()
    assert names["005930"] == "삼성전자"   # from data/kr_stocks_symbols.csv
    table = data.positions_table(snap, names=names)
    assert list(table.columns[:2]) == ["symbol", "name"]
    assert dict(zip(table["symbol"], table["name"])) == {"005930": "삼성전자"}
    fills = data.with_names(pd.DataFrame({"filled_at": ["x"], "symbol": ["000660"], "qty": [1]}), names)
    assert list(fills.columns) == ["filled_at", "symbol", "name", "qty"] and fills["name"][0] == "SK하이닉스"


def test_equity_and_kospi200_both_start_at_100_on_a_date_axis(tmp_path):
    _journal(tmp_path / "j.sqlite")
    curves = data.normalised_curves(data.read_snapshot(tmp_path / "j.sqlite").account)
    assert str(curves["day"].dtype).startswith("datetime64")   # a time axis, not one label per day
    by = {s: list(g["value"].round(6)) for s, g in curves.groupby("series")}
    assert by["portfolio"] == [100.0, 110.0, 99.0]
    assert by["KOSPI200"] == [100.0, 102.0, 101.0]
    assert list(curves[curves.series == "portfolio"]["drawdown"].round(6)) == [0.0, 0.0, round(99 / 110 - 1, 6)]


def test_mlflow_overview_lists_tracked_backtests_and_finds_the_journals_run(monkeypatch):
    import uuid

    from training import registry as R
    from training import tracking as T

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)   # the test session's embedded store
    tag = uuid.uuid4().hex[:8]
    T.track_run(T.RunRecord(T.BACKTEST, f"factor {tag}", params={"strategy": "factor", "span": "2023-01-02..2023-12-28"},
                            metrics={"total_return": 0.12, "sharpe": 1.1, "max_drawdown": -0.08}))
    T.track_run(T.RunRecord(T.DEMO, f"demo {tag}", params={"strategy": "technical+factor"},
                            metrics={"total_return": 0.01}, tags={"journal_run_id": f"run-{tag}"}))
    out = data.mlflow_overview(R.default_tracking_uri(), journal_run_id=f"run-{tag}")
    assert "error" not in out
    rows = {r["run"]: r for r in out["runs"]}
    bt = rows[f"factor {tag}"]
    assert bt["experiment"] == "backtests" and bt["strategy"] == "factor" and bt["span"] == "2023-01-02..2023-12-28"
    assert bt["total return"] == pytest.approx(0.12) and bt["Sharpe"] == pytest.approx(1.1)
    assert out["this_run"]["run"] == f"demo {tag}" and out["this_run"]["experiment"] == "demos"


def test_the_live_session_shows_the_latest_days_marks_and_pnl(tmp_path):
    _journal(tmp_path / "j.sqlite")
    j = Journal(tmp_path / "j.sqlite", run_id="t")
    kst = dt.timezone(dt.timedelta(hours=9))
    held = {"005930": {"qty": 10, "mark": 70_000.0, "reference": 70_000.0},
            "000660": {"qty": 5, "mark": None, "reference": 100_000.0}}
    j.record_marks(dt.datetime(2023, 12, 27, 14, 0, tzinfo=kst), 1_000.0, 2_000.0, 2_000.0, held)  # yesterday
    for minute, mark, equity in [(0, 71_000.0, 1_210_000.0), (1, 69_300.0, None), (2, 69_300.0, 1_193_000.0)]:
        marks = {"005930": {**held["005930"], "mark": mark},
                 "000660": {**held["000660"], "mark": None if equity is None else 100_000.0}}
        j.record_marks(dt.datetime(2023, 12, 28, 10, minute, tzinfo=kst), 0.0, equity, 1_200_000.0, marks)
    j.close()
    snap = data.read_snapshot(tmp_path / "j.sqlite")
    assert [p["at"][11:16] for p in snap.session] == ["10:00", "10:01", "10:02"]   # the latest session only
    table = data.live_marks_table(snap, {"005930": "삼성전자"})
    assert list(table["symbol"]) == ["000660", "005930"] and table.loc[1, "name"] == "삼성전자"
    assert table.loc[1, "change"] == pytest.approx(-0.01) and table.loc[1, "pnl"] == pytest.approx(-7_000.0)
    assert table.loc[0, "pnl"] == 0.0
    pnl = data.session_pnl(snap)   # the poll with a name unmarked has no P&L
    assert list(pnl["pnl"]) == [10_000.0, -7_000.0] and pnl["pnl_pct"].iloc[-1] == pytest.approx(-7_000 / 1_200_000)


def test_a_journal_without_session_marks_has_no_live_session(tmp_path):
    _journal(tmp_path / "j.sqlite")
    db = sqlite3.connect(tmp_path / "j.sqlite")
    db.execute("DROP TABLE session_marks")   # a journal written before the table existed
    db.commit()
    db.close()
    snap = data.read_snapshot(tmp_path / "j.sqlite")
    assert snap.session == [] and data.live_marks_table(snap).empty and data.session_pnl(snap).empty
