"""`trader data fetch` downloads daily bars through the KIS client from the simulator into parquet."""
from __future__ import annotations

import argparse

import polars as pl
import pytest

from broker.sim.exchange import SimConfig
from broker.sim.server import SimServer
from cluster.commands import data as data_cmd
from market.data import DataPaths, load_prices
from tests.integration.kis_helpers import history


def run(argv):
    parser = argparse.ArgumentParser(prog="trader")
    data_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def sim():
    with SimServer(SimConfig(rate_per_s=500, burst=50, token_throttle_s=0.2), history=history()) as s:
        yield s


@pytest.fixture
def keys(sim, monkeypatch, tmp_path):
    creds = sim.add_account(1_000_000)
    for k, v in creds.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("KRT_KIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)          # no stray .env is read
    return creds


def test_fetch_writes_the_shipped_layout(sim, keys, tmp_path):
    out = tmp_path / "fetched.parquet"
    rc = run(["data", "fetch", "--symbols", "005930,000660", "--start", "2022-07-01", "--end", "2023-05-31",
              "--out", str(out), "--env", "sim", "--rest-url", sim.rest_url, "--ws-url", sim.ws_url])
    assert rc == 0
    got = pl.read_parquet(out)
    shipped = pl.read_parquet(DataPaths().path("prices"), n_rows=1)
    assert got.schema == shipped.schema
    assert set(got["source"].cast(pl.Utf8)) == {"kis"} and set(got["name"].cast(pl.Utf8)) == {"삼성전자", "SK하이닉스"}
    cols = ["date", "symbol", "open", "high", "low", "close", "volume"]
    want = load_prices(DataPaths().path("prices"), symbols=["005930", "000660"], start="2022-07-01",
                       end="2023-05-31").select(cols).sort(["symbol", "date"])
    assert load_prices(out).select(cols).sort(["symbol", "date"]).equals(want)   # > 100 rows each: paged
    # --merge adds a later range without duplicating dates
    rc = run(["data", "fetch", "--symbols", "005930", "--start", "2023-05-01", "--end", "2023-05-31",
              "--out", str(out), "--env", "sim", "--rest-url", sim.rest_url, "--merge"])
    assert rc == 0
    merged = pl.read_parquet(out)
    assert len(merged) == len(got) and merged.select("date", "symbol").is_unique().all()


def test_fetch_reports_bad_input_and_missing_keys(sim, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    for k in ("KIS_APP_KEY", "KIS_APP_SECRET", "KIS_ACCOUNT"):
        monkeypatch.delenv(k, raising=False)
    out = str(tmp_path / "x.parquet")
    assert run(["data", "fetch", "--symbols", "5930", "--start", "2023-01-01", "--end", "2023-02-01", "--out", out]) == 2
    assert "bad" in capsys.readouterr().err
    assert run(["data", "fetch", "--symbols", "005930", "--start", "2023-03-01", "--end", "2023-02-01", "--out", out]) == 2
    rc = run(["data", "fetch", "--symbols", "005930", "--start", "2023-01-01", "--end", "2023-02-01", "--out", out,
              "--env", "sim", "--rest-url", sim.rest_url])
    assert rc == 1 and "KIS_APP_KEY" in capsys.readouterr().err


def test_data_fetch_is_a_trader_subcommand():
    from cluster import cli

    assert "cluster.commands.data" in cli.COMMAND_MODULES
    args = cli.build_parser().parse_args(["data", "fetch", "--symbols", "005930", "--start", "2023-01-02",
                                          "--end", "2023-01-31", "--out", "x.parquet"])
    assert args.func is data_cmd.fetch and args.env == "vts"
