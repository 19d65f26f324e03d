"""Execution algorithms compared on the fast-time rehearsal; writes reports/execution.md.

    flock /tmp/ray-test.lock /work/main/.venv/bin/python -m reports.execution [--seeds 11 12 13 14 15]

SYNTHETIC: every number here is measured on the simulator's invented intraday path
(broker/sim/intraday.py: a seeded Brownian bridge through each real daily bar's open, high, low
and close with U-shaped volume, traded one print every 30 s). It says how the algorithms behave
on that path — that TWAP children land on it, that a limit at the touch earns part of the spread
the path has — not what they would cost on KRX. No research conclusion may be drawn from it.

For each seed, one rehearsal per algorithm (`trader run --mode vts`'s loop: real Ray, the Serve
decision service, KisVenue over sockets, the simulator's virtual clock) trades the same sessions
from the same decisions (decisions read final daily bars only; the seed changes only the path),
so the algorithms are compared on identical paths. Slippage of each decided order's fills
(children included, intraday stops excluded), in bps of the benchmark, positive = a cost:
buy (price / bench − 1), sell (1 − price / bench), notional-weighted per rehearsal; the table
shows mean ± std over seeds. Benchmarks per symbol and day: the day's open (the path's first
print) and the day's VWAP (the path's Σ price × volume / Σ volume over the whole session).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from broker.execution_algos import AlgoConfig
from broker.journal import Journal
from broker.sim.intraday import SYNTHETIC_NOTE, synth_session
from market.data import DataPaths, load_prices

ROOT = Path(__file__).resolve().parent
SYMBOLS = ["000660", "005380", "005490", "005930", "035420"]
CUT = dt.date(2023, 4, 28)       # history ends here; the sessions after it are rehearsed
STEP_S = 30
CASH = 30_000_000
ALGOS = {"market_open": AlgoConfig("market_open"),
         "twap": AlgoConfig("twap", twap_window_min=60, twap_children=6),
         "limit_touch": AlgoConfig("limit_touch", touch_window_min=30)}


@dataclass(frozen=True)
class Benchmark:
    open: float
    vwap: float


def benchmarks(replay: pl.DataFrame, seed: int, step_s: int = STEP_S) -> dict[tuple[str, dt.date], Benchmark]:
    """(symbol, day) → the synthetic path's open and VWAP (the path the rehearsal traded on)."""
    out = {}
    for r in replay.iter_rows(named=True):
        bar = (r["open"], r["high"], r["low"], r["close"], r["volume"])
        if any(x is None for x in bar[:4]):
            continue
        prints = synth_session(r["symbol"], r["date"], bar, seed=seed, step_s=step_s)
        volume = sum(p.qty for p in prints)
        vwap = (sum(p.price * p.qty for p in prints) / volume if volume
                else sum(p.price for p in prints) / len(prints))
        out[(r["symbol"], r["date"])] = Benchmark(float(prints[0].price), vwap)
    return out


def slippage_bps(side: str, price: float, bench: float) -> float:
    """Positive = a cost: a buy above the benchmark, a sell below it."""
    return (price / bench - 1.0) * 1e4 if side == "buy" else (1.0 - price / bench) * 1e4


def journal_slippage(journal: Path, bench: dict[tuple[str, dt.date], Benchmark]) -> dict:
    """Notional-weighted slippage of the decided orders' fills of one rehearsal: {algo: {vwap,
    open, notional, fills, orders}}. A fill's algorithm is its parent's; an order without parent is
    market_open; intraday stops (…-STOP) are not decided orders and are left out."""
    j = Journal(journal)
    try:
        algo_of = {p["client_order_id"]: p["algo"] for p in j.parents()}
        parent_of = {o["client_order_id"]: o["parent_id"] for o in j.orders()}
        fills = j.fills()
    finally:
        j.close()
    acc: dict[str, dict] = {}
    for f in fills:
        cid = f["client_order_id"]
        if cid.endswith("-STOP"):
            continue
        parent = parent_of.get(cid)
        algo = algo_of[parent] if parent else "market_open"
        day = dt.datetime.fromisoformat(f["filled_at"]).date()
        b = bench[(f["symbol"], day)]
        notional = f["qty"] * f["price"]
        a = acc.setdefault(algo, {"vwap": 0.0, "open": 0.0, "notional": 0, "fills": 0, "orders": set()})
        a["vwap"] += notional * slippage_bps(f["side"], f["price"], b.vwap)
        a["open"] += notional * slippage_bps(f["side"], f["price"], b.open)
        a["notional"] += notional
        a["fills"] += 1
        a["orders"].add(parent or cid)
    return {algo: {"vwap": a["vwap"] / a["notional"], "open": a["open"] / a["notional"], "notional": a["notional"],
                   "fills": a["fills"], "orders": len(a["orders"])} for algo, a in acc.items()}


def rehearse(decide_url: str, folder: Path, execution: AlgoConfig, seed: int, days: int) -> Path:
    """One fast-time vts rehearsal against the simulator streaming the seeded synthetic session."""
    from broker.kis.config import Credentials, environment
    from broker.sim.clock import SimClock
    from broker.sim.exchange import SimConfig
    from broker.sim.server import SimServer
    from cluster.live import LiveConfig, run_live_loop
    from market.session import SessionTimes

    prices = load_prices(DataPaths().path("prices"), SYMBOLS).filter(pl.col("date") <= CUT + dt.timedelta(days=90))
    history, replay = prices.filter(pl.col("date") <= CUT), prices.filter(pl.col("date") > CUT)
    dates = sorted(set(replay["date"].to_list()))
    holidays = frozenset(d for d in (CUT + dt.timedelta(days=i) for i in range(1, 90))
                         if d.weekday() < 5 and d not in dates and d <= dates[-1])
    server = SimServer(SimConfig(virtual=True, rate_per_s=500.0, burst=50, token_throttle_s=1.0), history=history,
                       replay=replay).start()
    try:
        server.enable_intraday(seed=seed, step_s=STEP_S)
        keys = server.add_account(CASH)
        creds = Credentials(keys["KIS_APP_KEY"], keys["KIS_APP_SECRET"], keys["KIS_ACCOUNT"], keys["KIS_HTS_ID"])
        env = environment("vts", rest_url=server.rest_url, ws_url=server.ws_url, rate_per_s=500.0, burst=50,
                          token_throttle_s=1.0, unknown_check_delay_s=0.2, timeout_s=10.0, rate_limit_retries=1,
                          backoff_s=0.01)
        config = LiveConfig(mode="vts", environment=env, credentials=creds, symbols=SYMBOLS,
                            session=SessionTimes(holidays=holidays), clock=SimClock(server.rest_url, server.admin_secret),
                            days=days, cache_dir=folder / "kis", realtime=True, feed_silence_s=30.0,
                            intraday_every_s=STEP_S, execution=execution)
        journal = folder / "journal.sqlite"
        run_live_loop(config, decide_url, journal, progress=False)
        return journal
    finally:
        server.stop()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14, 15])
    ap.add_argument("--days", type=int, default=1, help="sessions per rehearsal (the first one rebalances from cash)")
    ap.add_argument("--out", default=str(ROOT / "execution.md"))
    args = ap.parse_args(argv)

    import ray

    from cluster.trading_loop import deploy_decision_service, free_port

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    results: dict[str, list[dict]] = {a: [] for a in ALGOS}
    replay = load_prices(DataPaths().path("prices"), SYMBOLS).filter(
        (pl.col("date") > CUT) & (pl.col("date") <= CUT + dt.timedelta(days=90)))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = deploy_decision_service(["technical", "factor"], free_port(), rl_champions=False,
                                          state_path=Path(tmp) / "state.sqlite")
            for seed in args.seeds:
                bench = benchmarks(replay, seed)
                for name, execution in ALGOS.items():
                    folder = Path(tmp) / f"{name}-{seed}"
                    journal = rehearse(url, folder, execution, seed, args.days)
                    row = journal_slippage(journal, bench)[name]
                    results[name].append({"seed": seed, **row})
                    print(f"seed {seed} {name}: vs VWAP {row['vwap']:+.1f} bps, vs open {row['open']:+.1f} bps "
                          f"({row['fills']} fills, {row['orders']} orders)", flush=True)
    finally:
        ray.shutdown()
    write(results, args, Path(args.out))


def _mean_std(xs: list[float]) -> str:
    return f"{statistics.mean(xs):+.1f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.1f}"


def write(results: dict[str, list[dict]], args, out: Path) -> None:
    lines = ["# Execution algorithms on the rehearsal — SYNTHETIC intraday path", "",
             f"> {SYNTHETIC_NOTE}. These numbers describe the algorithms on an invented path, not KRX costs.", "",
             f"`python -m reports.execution --seeds {' '.join(map(str, args.seeds))} --days {args.days}`: per seed, "
             f"one fast-time `trader run --mode vts` rehearsal per algorithm on the same decisions "
             f"({', '.join(SYMBOLS)}, sessions after {CUT}, {CASH:,} KRW), the synthetic path seeded per seed "
             f"(one print every {STEP_S} s). Slippage of the decided orders' fills in bps, positive = cost, "
             "notional-weighted per rehearsal; mean ± std over seeds.", "",
             "| algorithm | settings | vs day VWAP (bps) | vs day open (bps) | fills / rehearsal | orders / rehearsal |",
             "|---|---|---|---|---|---|"]
    for name, rows in results.items():
        cfg = ALGOS[name]
        settings = {"market_open": "one market order at 09:00:30",
                    "twap": f"{cfg.twap_children} children over {cfg.twap_window_min:g} min",
                    "limit_touch": f"at the touch, re-priced; market after {cfg.touch_window_min:g} min"}[name]
        lines.append(f"| {name} | {settings} | {_mean_std([r['vwap'] for r in rows])} | "
                     f"{_mean_std([r['open'] for r in rows])} | {statistics.mean(r['fills'] for r in rows):.1f} | "
                     f"{statistics.mean(r['orders'] for r in rows):.1f} |")
    lines += ["", "Per seed:", "", "```", json.dumps(results, indent=1), "```", ""]
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
