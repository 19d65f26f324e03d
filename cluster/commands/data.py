"""`trader data fetch`: daily bars from KIS (or the local simulator) into the project's parquet layout.

    trader data fetch --symbols 005930,000660 --start 2024-01-01 --end 2024-06-30 \\
        --out data/kr_stocks_daily_kis.parquet [--env vts|real|sim] [--rest-url URL --ws-url URL] [--merge]

Keys come only from KIS_APP_KEY / KIS_APP_SECRET / KIS_ACCOUNT (environment or an untracked .env).
The file has the columns of data/kr_stocks_daily.parquet (date, symbol, name, open, high, low,
close, volume, source), so `market.data.load_prices` reads it unchanged (e.g. via KRT_DATA_DIR).
"""
from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import polars as pl

from cluster.commands._common import (
    EXIT_RUNTIME,
    EXIT_USAGE,
    CommandError,
    error_line,
    new_parser,
    reports_errors,
)


def register(subparsers) -> None:
    p = new_parser(subparsers, "data", help="download market data through the KIS client",
                   description="Market data through the KIS client (or the local simulator).",
                   example_lines=FETCH_EXAMPLES)
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    f = new_parser(sub, "fetch", help="daily bars for symbols and a date range into parquet",
                   description="Daily bars for SYMBOLS over --start..--end into a parquet file with the shipped "
                               "layout (keys from KIS_APP_KEY / KIS_APP_SECRET / KIS_ACCOUNT).",
                   example_lines=FETCH_EXAMPLES)
    f.set_defaults(command_name="data fetch")
    f.add_argument("--symbols", required=True, help="comma-separated 6-digit KRX codes, e.g. 005930,000660")
    f.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    f.add_argument("--end", required=True, help="last date, YYYY-MM-DD")
    f.add_argument("--out", required=True, help="parquet file to write")
    f.add_argument("--env", default="vts", choices=("vts", "real", "sim"),
                   help="KIS environment (default vts; 'sim' needs --rest-url/--ws-url of a running simulator)")
    f.add_argument("--rest-url", default="", help="simulator REST URL (with --env sim)")
    f.add_argument("--ws-url", default="", help="simulator WebSocket URL (with --env sim)")
    f.add_argument("--raw", action="store_true", help="unadjusted prices (default: adjusted)")
    f.add_argument("--merge", action="store_true", help="merge into an existing file (new rows win)")
    f.set_defaults(func=fetch)
    p.set_defaults(func=lambda args: (p.print_help(), EXIT_USAGE)[1])


FETCH_EXAMPLES = [
    "trader data fetch --symbols 005930,000660 --start 2024-01-01 --end 2024-06-30 --out data/kis.parquet",
    ("trader data fetch --symbols 005930 --start 2024-01-01 --end 2024-01-31 --out d.parquet --env sim "
     "--rest-url http://127.0.0.1:18080"),
]


def _date(text: str, flag: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{flag} must be a date YYYY-MM-DD, got {text!r}") from None


@reports_errors
def fetch(args) -> int:
    from broker.kis import quotes
    from broker.kis.config import Credentials, environment, sim_environment
    from broker.kis.errors import KisConfigError, KisError
    from broker.kis.rest import KisRest

    start, end = _date(args.start, "--start"), _date(args.end, "--end")
    if start > end:
        raise CommandError(f"--start {start} is after --end {end}")
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    bad = [s for s in symbols if not (len(s) == 6 and s.isalnum())]
    if not symbols or bad:
        raise CommandError(f"--symbols needs 6-character KRX codes; bad: {bad or '(none given)'}")
    if args.env == "sim" and not args.rest_url:
        raise CommandError("--env sim needs --rest-url (and --ws-url) of a running simulator")
    try:
        cred = Credentials.from_env()
        if args.env == "sim":
            env = sim_environment(args.rest_url, args.ws_url or "ws://127.0.0.1:0")
        else:
            env = environment(args.env)
        rest = KisRest(env, cred)
        frames = []
        for sym in symbols:
            df = quotes.daily_bars(rest, sym, start, end, adjusted=not args.raw, with_name=True)
            print(f"{sym}: {len(df)} bars", file=sys.stderr)
            frames.append(df)
    except (KisConfigError, KisError) as exc:
        print(error_line("data fetch", f"fetch failed: {exc}"), file=sys.stderr)
        return EXIT_RUNTIME
    out = to_layout(pl.concat(frames) if frames else pl.DataFrame())
    path = Path(args.out)
    if args.merge and path.exists():
        old = pl.read_parquet(path).with_columns(pl.col(c).cast(pl.Utf8) for c in ("symbol", "name", "source"))
        new = out.with_columns(pl.col(c).cast(pl.Utf8) for c in ("symbol", "name", "source"))
        merged = pl.concat([old.join(new.select("date", "symbol"), on=["date", "symbol"], how="anti"), new])
        out = to_layout(merged)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write_parquet(path)
    print(f"wrote {len(out)} rows for {out['symbol'].n_unique()} symbols to {path}", file=sys.stderr)
    return 0


def to_layout(df: pl.DataFrame) -> pl.DataFrame:
    """The shipped layout: date Datetime[us], symbol/name/source Categorical, prices Float64."""
    if "source" not in df.columns:
        df = df.with_columns(pl.lit("kis").alias("source"))
    if "name" not in df.columns:
        df = df.with_columns(pl.lit("").alias("name"))
    return (df.select(
        pl.col("date").cast(pl.Datetime("us")), pl.col("symbol").cast(pl.Utf8).cast(pl.Categorical),
        pl.col("name").cast(pl.Utf8).cast(pl.Categorical), *(pl.col(c).cast(pl.Float64) for c in
                                                               ("open", "high", "low", "close", "volume")),
        pl.col("source").cast(pl.Utf8).cast(pl.Categorical))
        .sort(["symbol", "date"]))
