"""Every `trader` command speaks with one voice: `trader <command>: error: …` on stderr, exit 2 for
bad input and 1 for a runtime failure, spans clipped to the data with a note naming its real
span, data files checked by layout, "did you mean" for mistyped names, examples in every --help.
The CLI runs in-process (cluster.cli.main) on the shipped data; nothing here starts Ray."""
from __future__ import annotations

import json

import polars as pl
import pytest

from backtest.baselines import BENCHMARKS
from cluster.cli import COMMAND_MODULES, build_parser, main
from cluster.commands.demo import checked_end
from cluster.commands.strategies import DESCRIPTIONS
from market.data import DataPaths, data_span
from strategies.registry import STRATEGIES

PRICES, INDEX = "data/kr_stocks_daily.parquet", "data/kr_index_daily.parquet"
DATA_START, DATA_END = "1999-09-16", "2023-12-28"  # the shipped panel (data/README.md)


def backtest(*extra: str, strategy: str = "buy-hold-kospi200", prices: str = PRICES, out=None) -> list[str]:
    return ["backtest", "--strategy", strategy, "--prices", prices, "--index", INDEX, "--out", str(out), *extra]


def command_names() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sorted(sub.choices)


def test_the_data_span_is_read_from_the_file():
    assert tuple(map(str, data_span(DataPaths().path("prices")))) == (DATA_START, DATA_END)


@pytest.mark.parametrize("command", command_names())
def test_every_command_has_examples_in_its_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"trader {command}" in out.split("examples:")[1]


def test_every_command_module_adds_a_command():
    import argparse
    import importlib

    for name in COMMAND_MODULES:
        sub = argparse.ArgumentParser().add_subparsers(dest="command")
        importlib.import_module(name).register(sub)
        assert sub.choices and set(sub.choices) <= set(command_names()), name


def test_strategies_lists_every_name_with_a_description(capsys):
    assert set(STRATEGIES) | set(BENCHMARKS) <= set(DESCRIPTIONS)  # a new strategy needs its line
    assert main(["strategies"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(STRATEGIES) + len(BENCHMARKS)
    for line in lines:
        name, description = line.split(maxsplit=1)
        assert description == DESCRIPTIONS[name]


def test_end_past_the_data_is_clipped_with_a_note_and_the_report_says_the_real_span(tmp_path, capsys):
    rc = main(backtest("--start", "2023-12-01", "--end", "2030-01-01", out=tmp_path))
    captured = capsys.readouterr()
    assert rc == 0
    assert f"trader backtest: note: data ends {DATA_END}; --end 2030-01-01 clipped to {DATA_END}" in captured.err
    assert json.loads((tmp_path / "metrics.json").read_text())["end"] == DATA_END
    assert f"→ {DATA_END}" in captured.out and "2030" not in captured.out


def test_demo_end_past_the_data_is_clipped_the_same_way():
    end, notes = checked_end("2030-01-01", DataPaths().path("prices"))
    assert end == DATA_END and notes == [f"data ends {DATA_END}; --end 2030-01-01 clipped to {DATA_END}"]
    assert checked_end("2023-06-30", DataPaths().path("prices")) == ("2023-06-30", [])


@pytest.mark.parametrize("argv,command,message", [
    (["backtest", "--start", "1990-01-03", "--end", "1995-12-28"], "backtest",
     f"--end 1995-12-28 is before the price data: {DataPaths().path('prices')} spans {DATA_START}..{DATA_END}"),
    (["backtest", "--start", "2024-02-01", "--end", "2024-03-29"], "backtest",
     f"--start 2024-02-01 is after the price data: {DataPaths().path('prices')} spans {DATA_START}..{DATA_END}"),
    (["demo", "--end", "1995-01-01", "--out", "{tmp}"], "demo",
     f"--end 1995-01-01 is before the price data: {DataPaths().path('prices')} spans {DATA_START}..{DATA_END}"),
    (["backtest", "--strategy", "tecnical", "--start", "2022-01-03", "--end", "2022-03-02"], "backtest",
     "unknown strategy 'tecnical'; did you mean technical?"),
    (["check-lookahead", "equal-weight-montly"], "check-lookahead",
     "unknown strategy 'equal-weight-montly'; did you mean equal-weight-monthly"),
    (["serve", "--agents", "technical,factr"], "serve", "unknown agent 'factr'; did you mean factor"),
    (["promote", "--algo", "dqm"], "promote", "unknown algorithm 'dqm'; did you mean dqn?"),
    (["demo", "--days", "1", "--out", "{tmp}"], "demo", "--days must be at least 2"),
    (["data", "fetch", "--symbols", "5930", "--start", "2024-01-01", "--end", "2024-01-31", "--out", "{tmp}/x"],
     "data fetch", "--symbols needs 6-character KRX codes"),
])
def test_input_errors_have_one_prefix_and_exit_2(argv, command, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "backtest":
        argv = backtest(*argv[1:], out=tmp_path) if "--strategy" not in argv else \
            ["backtest", "--prices", PRICES, "--index", INDEX, "--out", str(tmp_path), *argv[1:]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"trader {command}: error: ") and message in err, err
    assert "Traceback" not in err


def test_the_index_file_passed_as_prices_is_named_as_not_a_price_file(tmp_path, capsys):
    assert main(backtest("--start", "2022-01-03", "--end", "2022-03-02", prices=INDEX, out=tmp_path)) == 2
    err = capsys.readouterr().err
    assert "kr_index_daily.parquet is not a price file" in err and "KOSPI200" in err and "--index" in err
    assert "sell-tax" not in err


def test_a_file_missing_columns_is_named_with_the_columns(tmp_path, capsys):
    bars = pl.read_parquet(PRICES).filter(pl.col("symbol") == "005930").select("date", "symbol", "close")
    bars.write_parquet(tmp_path / "closes.parquet")
    rc = main(backtest("--start", "2022-01-03", "--end", "2022-03-02", prices=str(tmp_path / "closes.parquet"),
                       out=tmp_path / "out"))
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{tmp_path / 'closes.parquet'} is not a price file: missing columns open, high, low, volume" in err


def test_a_price_column_that_is_not_numeric_is_named(tmp_path, capsys):
    bars = pl.read_parquet(PRICES).filter(pl.col("symbol") == "005930")
    bars.with_columns(pl.col("close").cast(pl.Utf8)).write_parquet(tmp_path / "text.parquet")
    rc = main(backtest("--start", "2022-01-03", "--end", "2022-03-02", prices=str(tmp_path / "text.parquet"),
                       out=tmp_path / "out"))
    assert rc == 2 and "is not a price file: columns close are not numbers" in capsys.readouterr().err


def test_a_mistyped_command_gets_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bactest"])
    assert exc.value.code == 2
    assert "did you mean backtest?" in capsys.readouterr().err


def test_a_runtime_failure_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    class Broken:
        name, lookback = "broken", 1

        def fit(self, history):
            raise RuntimeError("the model file is corrupt")

        def target_weights(self, window):
            raise AssertionError("never reached")

    monkeypatch.setitem(STRATEGIES, "broken", lambda ctx: Broken())
    monkeypatch.delenv("KRT_TRACEBACK", raising=False)
    rc = main(backtest("--start", "2022-01-03", "--end", "2022-03-02", strategy="broken", out=tmp_path))
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("trader backtest: error: RuntimeError: the model file is corrupt")
    assert "Traceback" not in err
