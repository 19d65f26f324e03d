"""Derive the project's compact dataset (this folder) from the full real data in ../shared/data.

    python data/build.py --source ../shared/data --out data

Large-cap daily bars, the indices, the KODEX 200 ETF, the symbol list and the delisting list are
copied whole; the all-market files (fundamentals, market-cap snapshots) are cut down to the
symbols of the price panel. Nothing is altered beyond that selection.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import polars as pl

WHOLE = ["kr_stocks_daily.parquet", "kr_index_daily.parquet", "kr_etf_daily.parquet",
         "kr_stocks_symbols.csv", "kr_delisted.csv.gz", "kr_kospi200_valuation_daily.csv.gz"]
CUT_TO_PANEL = ["kr_fundamentals_quarterly.parquet", "kr_market_snapshot_daily.parquet"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in WHOLE:
        shutil.copyfile(args.source / name, args.out / name)
    symbols = pl.read_parquet(args.source / "kr_stocks_daily.parquet")["symbol"].unique()
    for name in CUT_TO_PANEL:
        df = pl.read_parquet(args.source / name).filter(pl.col("symbol").is_in(symbols.to_list()))
        df.write_parquet(args.out / name, compression="zstd")
    for f in sorted(args.out.iterdir()):
        if f.suffix in (".parquet", ".csv", ".gz"):
            print(f"{f.name:45s} {f.stat().st_size / 1e6:6.2f} MB")


if __name__ == "__main__":
    main()
