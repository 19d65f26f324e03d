"""Run the KIS-protocol simulator on its own: `python -m broker.sim --env-file .env.sim`.

Dummy credentials for one account are written to the env file (mode 0600, KIS_* variables);
the REST/WebSocket URLs and the admin secret are printed. Ctrl-C stops it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import time

import polars as pl

from broker.sim.exchange import SimConfig
from broker.sim.server import SimServer
from market.data import DataPaths, load_prices


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m broker.sim")
    ap.add_argument("--cash", type=int, default=10_000_000)
    ap.add_argument("--env-file", default=".env.sim", help="where to write the dummy KIS_* credentials")
    ap.add_argument("--today", default=None, help="replay cut: history up to this date, later bars replay")
    ap.add_argument("--real", action="store_true",
                    help="pose as the real server (TR ids, codes, page sizes, 18 calls/s) instead of VTS (1 call/s)")
    ap.add_argument("--rate-per-s", type=float, default=None,
                    help="REST calls per second per app key (default: KIS's, 18 real / 1 VTS)")
    ap.add_argument("--burst", type=int, default=None, help="calls accepted at once (default: one second's quota)")
    ap.add_argument("--token-throttle-s", type=float, default=60.0,
                    help="tokenP at most once per this many seconds, else 403 EGW00133 (default 60, as KIS)")
    ap.add_argument("--intraday-seed", type=int, default=None,
                    help="stream each replay day as a SYNTHETIC intraday session with this seed "
                         "(broker/sim/intraday.py; rehearsal only) instead of one end-of-day frame")
    ap.add_argument("--intraday-step-s", type=int, default=30, help="seconds between synthetic prints")
    args = ap.parse_args(argv)
    df = load_prices(DataPaths().path("prices"))
    cut = dt.date.fromisoformat(args.today) if args.today else df["date"].max()
    config = SimConfig(virtual=not args.real, rate_per_s=args.rate_per_s, burst=args.burst,
                       token_throttle_s=args.token_throttle_s)
    sim = SimServer(config, history=df.filter(pl.col("date") <= cut),
                    replay=df.filter(pl.col("date") > cut)).start()
    if args.intraday_seed is not None:
        sim.enable_intraday(args.intraday_seed, args.intraday_step_s)
    creds = sim.add_account(args.cash)
    fd = os.open(args.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{k}={v}\n" for k, v in creds.items()))
        f.write(f"KIS_SIM_REST={sim.rest_url}\nKIS_SIM_WS={sim.ws_url}\nKIS_SIM_ADMIN={sim.admin_secret}\n")
    print(f"KIS simulator ({'real' if args.real else 'VTS'}): REST {sim.rest_url}  WebSocket {sim.ws_url}  "
          f"today {sim.exchange.today}  limit {config.rate_per_s:g}/s burst {config.burst}  "
          f"tokenP once per {config.token_throttle_s:g} s")
    if sim.intraday_enabled:
        print(f"WebSocket feed: SYNTHETIC intraday sessions (seed {args.intraday_seed}, a print every "
              f"{args.intraday_step_s} s) — for rehearsal only, not market data")
    print(f"dummy credentials and the admin secret written to {args.env_file}")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
