"""`trader backtest`, `trader strategies` and `trader check-lookahead` through their real command
modules on the shipped data: the metrics.json contract, the report, reachability of every
registered strategy, and clear errors."""
import argparse
import base64
import importlib
import json
import re

import numpy as np
import pytest

from backtest.report import monthly_returns
from market.data import load_panel
from strategies.registry import STRATEGIES

MODULES = ("cluster.commands.backtest", "cluster.commands.strategies", "cluster.commands.lookahead")
CONTRACT = ("total_return", "annual_return", "annual_volatility", "sharpe", "sortino", "max_drawdown",
            "information_ratio", "turnover", "costs", "days")
PRICES, INDEX = "data/kr_stocks_daily.parquet", "data/kr_index_daily.parquet"


def trader(*argv):
    parser = argparse.ArgumentParser(prog="trader")
    sub = parser.add_subparsers()
    for m in MODULES:
        importlib.import_module(m).register(sub)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def test_commands_are_registered_in_the_cli():
    from cluster import cli

    assert set(MODULES) <= set(cli.COMMAND_MODULES)


# strategies that fit hidden-Markov regime models spend tens of seconds in hmmlearn on a busy
# 2-core machine, the RL agents train with RLlib (a local Ray, ~90 s each), the factor model
# scores 105 names (2.4 s): marked slow so `-m "not slow"` skips them
HEAVY = {"ensemble", "ensemble-validated", "ensemble-combined", "regime-factor", "factor", "dqn", "appo", "lgbm",
         "lgbm-5d", "gru", "transformer"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n
                                  for n in sorted(STRATEGIES)] + ["buy-hold-kospi200"])
def test_every_strategy_is_reachable_and_metrics_json_has_the_contract(tmp_path, name):
    # a short span and training window: this checks the wiring of every registered strategy
    # (some fit hidden-Markov models, which costs seconds per fit), not their performance
    out = tmp_path / name
    rc = trader("backtest", "--strategy", name, "--prices", PRICES, "--index", INDEX, "--train-start", "2020-01-02",
                "--start", "2022-11-01", "--end", "2022-12-29", "--out", out, "--rebalance", "monthly",
                "--no-track")   # the wiring and metrics.json here; tracking: tests/unit/test_run_tracking.py
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    for k in CONTRACT:
        assert isinstance(m[k], (int, float)) and np.isfinite(m[k]), k
    bars = load_panel(symbols=["005930"], start="2022-11-01", end="2022-12-29")
    assert m["max_drawdown"] <= 0 and m["days"] == len(bars) + 1  # the span's bars + the starting close
    assert m["strategy"] == name and m["start"] == "2022-11-01"


@pytest.mark.slow   # 4.5 s: a whole year through the report
def test_report_and_files_of_a_year_long_run(tmp_path):
    rc = trader("backtest", "--strategy", "equal-weight-monthly", "--prices", PRICES, "--index", INDEX,
                "--start", "2022-01-03", "--end", "2022-12-29", "--out", tmp_path, "--rebalance", "weekly")
    assert rc == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["days"] == 246 + 1 and m["max_drawdown"] < 0  # 2022's trading days + the starting close
    html = (tmp_path / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 6 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert "http" not in html.replace("http-equiv", "")  # self-contained
    equity = (tmp_path / "equity.csv").read_text().splitlines()
    assert equity[0].startswith("date,equity,cash") and len(equity) == 248
    fills = (tmp_path / "fills.csv").read_text().splitlines()
    assert fills[0] == "date,symbol,side,qty,price,commission,tax" and len(fills) > 50


def test_kospi200_benchmark_run_has_zero_information_ratio(tmp_path):
    trader("backtest", "--strategy", "buy-hold-kospi200", "--prices", PRICES, "--index", INDEX,
           "--start", "2021-01-04", "--end", "2021-12-30", "--out", tmp_path)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["total_return"] == pytest.approx(m["benchmark_total_return"])
    assert m["information_ratio"] == 0.0 and m["beta"] == pytest.approx(1.0)


def test_fit_sees_only_data_before_start_and_train_start(tmp_path, monkeypatch):
    seen = {}

    class Spy:
        name, lookback = "spy", 1

        def fit(self, history):
            seen["first"], seen["last"] = str(history.dates[0]), str(history.dates[-1])

        def target_weights(self, window):
            seen["max_decision"] = max(seen.get("max_decision", ""), str(window.dates[-1]))
            return np.zeros(len(window.symbols))

    monkeypatch.setitem(STRATEGIES, "spy", lambda ctx: Spy())
    trader("backtest", "--strategy", "spy", "--prices", PRICES, "--index", INDEX, "--train-start", "2019-01-02",
           "--start", "2021-01-04", "--end", "2021-03-31", "--out", tmp_path)
    assert seen["first"] == "2019-01-02" and seen["last"] == "2020-12-30"
    assert seen["max_decision"] < "2021-03-31"  # the last bar's decision would trade after --end


def test_refit_walks_forward_inside_the_test_span(tmp_path, monkeypatch):
    fits = []

    class Spy:
        name, lookback = "spy", 1

        def fit(self, history):
            fits.append(str(history.dates[-1]))

        def target_weights(self, window):
            live = np.isfinite(window.close[-1])
            return live * 0.5 / live.sum()

    monkeypatch.setitem(STRATEGIES, "spy", lambda ctx: Spy())
    trader("backtest", "--strategy", "spy", "--prices", PRICES, "--index", INDEX, "--start", "2021-01-04",
           "--end", "2021-12-30", "--refit", "quarterly", "--out", tmp_path)
    assert len(fits) == 4 and fits[0] == "2020-12-30" and fits == sorted(fits)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["refits"] == 4 and m["days"] == 249


def test_strategies_lists_every_name(capsys):
    assert trader("strategies") == 0
    out = capsys.readouterr().out
    for name in list(STRATEGIES) + ["buy-hold-kospi200"]:
        assert name in out


@pytest.mark.parametrize("argv,message", [
    (["--strategy", "nope"], "unknown strategy 'nope'"),
    (["--strategy", "technical", "--start", "2022-13-01"], "--start must be a date"),
    (["--strategy", "technical", "--end", "2021-01-01"], "must be after --start"),
    (["--strategy", "technical", "--prices", "missing.parquet"], "--prices file not found"),
])
def test_bad_input_gets_a_clear_error(tmp_path, capsys, argv, message):
    base = {"--strategy": "technical", "--prices": PRICES, "--index": INDEX, "--start": "2022-01-03",
            "--end": "2022-06-30", "--out": str(tmp_path)}
    base.update(dict(zip(argv[::2], argv[1::2])))
    rc = trader("backtest", *[x for kv in base.items() for x in kv])
    assert rc == 2 and message in capsys.readouterr().err


def test_check_lookahead_command_passes_a_real_strategy(capsys, tmp_path):
    rc = trader("check-lookahead", "equal-weight-monthly", "--start", "2023-06-01", "--points", "3",
                "--json", tmp_path / "r.json")
    assert rc == 0 and "no look-ahead" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is True


def test_check_lookahead_command_fails_a_leaky_strategy(capsys, monkeypatch):
    class Leaky:
        name, lookback = "leaky", 1

        def weights_matrix(self, panel):  # tomorrow's close decides today
            up = np.vstack([panel.close[1:] > panel.close[:-1], np.zeros((1, panel.close.shape[1]), bool)])
            return up / np.maximum(up.sum(axis=1, keepdims=True), 1)

    monkeypatch.setitem(STRATEGIES, "leaky", lambda ctx: Leaky())
    rc = trader("check-lookahead", "leaky", "--start", "2023-06-01", "--points", "3")
    err = capsys.readouterr().err
    assert rc == 1 and "LOOK-AHEAD" in err and re.search(r"on 2023-\d\d-\d\d for \w+", err)


def test_monthly_returns_table():
    dates = np.array(["2024-01-31", "2024-02-01", "2024-02-29", "2024-03-04"], dtype="datetime64[D]")
    years, table = monthly_returns(dates, np.array([100.0, 110.0, 121.0, 108.9]))
    assert years == [2024]
    assert table[0, 1] == pytest.approx(0.21) and table[0, 2] == pytest.approx(-0.1)
    assert np.isnan(table[0, 0])  # the starting close is no month of its own


@pytest.mark.slow
def test_trader_backtest_as_a_process(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "cluster.cli", "backtest", "--strategy", "equal-weight-monthly", "--prices", PRICES,
           "--index", INDEX, "--start", "2023-01-02", "--end", "2023-06-30", "--out", str(tmp_path / "run")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Sharpe" in done.stdout and "KOSPI200" in done.stdout and (tmp_path / "run" / "metrics.json").exists()
    bad = subprocess.run(cmd[:5] + ["no-such-strategy"] + cmd[6:], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown strategy 'no-such-strategy'" in bad.stderr


def test_seeds_give_mean_and_std_in_metrics_json(tmp_path, monkeypatch):
    class Random:
        name, lookback = "random", 1

        def __init__(self, seed):
            self.rng = np.random.default_rng(seed)

        def fit(self, history):
            pass

        def target_weights(self, window):
            w = self.rng.random(len(window.symbols)) * np.isfinite(window.close[-1])
            return 0.9 * w / max(w.sum(), 1e-9)

    monkeypatch.setitem(STRATEGIES, "random", lambda ctx: Random(ctx.seed))
    rc = trader("backtest", "--strategy", "random", "--prices", PRICES, "--index", INDEX, "--start", "2022-01-03",
                "--end", "2022-06-30", "--seed", "1", "--seeds", "0,1,2", "--rebalance", "monthly", "--out", tmp_path)
    assert rc == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["seeds"] == [0, 1, 2] and m["seed"] == 1
    s = m["seed_summary"]["total_return"]
    assert s["std"] > 0 and np.isfinite(s["mean"]) and set(m["seed_summary"]) >= set(CONTRACT)


def test_side_files_reach_the_strategy_context(tmp_path, monkeypatch):
    seen = {}

    def factory(ctx):
        seen["fundamentals"] = ctx.paths.path("fundamentals")
        seen["market_caps"] = ctx.paths.path("market_caps")
        seen["prices"] = ctx.paths.path("prices")
        seen["seed"] = ctx.seed
        return STRATEGIES["equal-weight-monthly"](ctx)

    monkeypatch.setitem(STRATEGIES, "ctx-spy", factory)
    rc = trader("backtest", "--strategy", "ctx-spy", "--prices", PRICES, "--index", INDEX,
                "--fundamentals", "data/kr_fundamentals_quarterly.parquet",
                "--market-caps", "data/kr_market_snapshot_daily.parquet", "--seed", "7",
                "--start", "2023-01-02", "--end", "2023-03-31", "--out", tmp_path)
    assert rc == 0 and seen["seed"] == 7
    assert seen["fundamentals"].is_absolute() and seen["fundamentals"].name == "kr_fundamentals_quarterly.parquet"
    assert seen["market_caps"].exists() and seen["prices"].exists()
