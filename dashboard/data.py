"""What the dashboard shows, read from the journal (SQLite, read-only) and MLflow.

Plain functions returning pandas frames / dicts, so they are testable without Streamlit. The
journal is opened with `mode=ro` on a fresh connection per read: the dashboard never takes a
write lock and never holds the trading loop up (WAL readers do not block the writer).
"""
from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


class JournalMissing(FileNotFoundError):
    """No journal at the configured path yet (the loop has not run)."""


@dataclass
class Snapshot:
    """Everything one dashboard refresh needs, read in one go."""
    account: pd.DataFrame                      # day, cash, equity, benchmark, drawdown, bench_equity, pnl
    orders: pd.DataFrame
    fills: pd.DataFrame
    decisions: list[dict] = field(default_factory=list)   # oldest first, each {"day":..., **payload}
    run_id: str = ""                           # the journal's run shown (its latest)
    session: list[dict] = field(default_factory=list)     # the latest session's live-mark polls, oldest first

    @property
    def latest(self) -> dict | None:
        return None if self.account.empty else self.account.iloc[-1].to_dict()

    @property
    def latest_decision(self) -> dict | None:
        return self.decisions[-1] if self.decisions else None


def read_snapshot(path: Path, max_rows: int = 200) -> Snapshot:
    """The latest run of the journal (a journal can hold several; each row carries its run id),
    read through broker/journal.py, read-only."""
    from broker.journal import Journal

    path = Path(path)
    if not path.exists():
        raise JournalMissing(f"no journal at {path}: start the loop (`trader run` or `trader demo`) first")
    journal = Journal(path, readonly=True)
    try:
        journal.run_id = journal.latest_run() or ""
        acct = pd.DataFrame(journal.accounts(), columns=["day", "cash", "equity", "positions", "benchmark"])
        orders = pd.DataFrame(journal.orders(newest=max_rows),
                              columns=["client_order_id", "decided_at", "symbol", "side", "qty", "order_type",
                                       "limit_price", "state", "filled_qty", "reason"])
        fills = pd.DataFrame(journal.fills(newest=max_rows),
                             columns=["filled_at", "symbol", "side", "qty", "price", "commission", "tax",
                                      "client_order_id"])
        rows = journal.decisions()
        session = latest_session(journal)
    finally:
        journal.close()
    decisions = []
    for row in rows:
        try:
            body = json.loads(row["payload"])
        except json.JSONDecodeError:
            body = {"error": "unreadable payload"}
        decisions.append({"day": row["day"], **(body if isinstance(body, dict) else {"payload": body})})
    return Snapshot(equity_curve(acct), orders, fills, decisions, run_id=journal.run_id, session=session)


def latest_session(journal) -> list[dict]:
    """The session-watch polls (journal `session_marks`) of the latest session day, oldest first."""
    last = journal.session_marks(newest=1)
    if not last:
        return []
    at = dt.datetime.fromisoformat(last[0]["at"])
    return journal.session_marks(since=at.replace(hour=0, minute=0, second=0, microsecond=0))


def live_marks_table(snapshot: Snapshot, names: dict[str, str] | None = None) -> pd.DataFrame:
    """The held names at the latest poll's live marks: the change and P&L against the reference
    (the last final close, the price the day's decision and the stops are judged on)."""
    columns = ["symbol", "name", "shares", "mark", "reference", "change", "pnl"]
    if not snapshot.session:
        return pd.DataFrame(columns=columns)
    names = names or {}
    rows = []
    for sym, m in sorted(snapshot.session[-1]["marks"].items()):
        mark, ref = m.get("mark"), m.get("reference")
        known = mark is not None and ref
        rows.append({"symbol": sym, "name": names.get(sym, ""), "shares": int(m["qty"]), "mark": mark,
                     "reference": ref, "change": mark / ref - 1 if known else np.nan,
                     "pnl": m["qty"] * (mark - ref) if known else np.nan})
    return pd.DataFrame(rows, columns=columns)


def session_pnl(snapshot: Snapshot) -> pd.DataFrame:
    """The book's P&L at live marks against the day's start, per poll with every held name marked
    (at as a datetime, pnl in KRW, pnl_pct of the day's starting equity)."""
    rows = [{"at": dt.datetime.fromisoformat(p["at"]), "pnl": p["equity"] - p["day_start_equity"],
             "pnl_pct": p["equity"] / p["day_start_equity"] - 1}
            for p in snapshot.session if p["equity"] is not None and p["day_start_equity"] > 0]
    return pd.DataFrame(rows, columns=["at", "pnl", "pnl_pct"])


def equity_curve(acct: pd.DataFrame) -> pd.DataFrame:
    """Adds drawdown, the benchmark scaled to the starting equity, and daily P&L."""
    acct = acct.copy()
    if acct.empty:
        for c in ("drawdown", "bench_equity", "bench_drawdown", "pnl"):
            acct[c] = pd.Series(dtype=float)
        return acct
    eq = acct["equity"].astype(float).to_numpy()
    acct["drawdown"] = eq / np.maximum.accumulate(eq) - 1.0
    acct["pnl"] = np.concatenate([[np.nan], np.diff(eq)])
    bench = acct["benchmark"].astype(float).to_numpy()
    valid = np.flatnonzero(np.isfinite(bench))
    if valid.size:
        scaled = eq[valid[0]] * bench / bench[valid[0]]
        acct["bench_equity"] = scaled
        filled = pd.Series(scaled).ffill().to_numpy()
        acct["bench_drawdown"] = filled / np.fmax.accumulate(np.nan_to_num(filled, nan=-np.inf)) - 1.0
    else:
        acct["bench_equity"] = np.nan
        acct["bench_drawdown"] = np.nan
    return acct


def positions_table(snapshot: Snapshot, prices: dict[str, float] | None = None,
                    names: dict[str, str] | None = None) -> pd.DataFrame:
    """Latest positions (shares) with the stock's name, value and weight of equity when a price
    is known, plus the target weight of the latest decision."""
    latest = snapshot.latest
    columns = ["symbol", "name", "shares", "price", "value", "weight", "target"]
    if latest is None:
        return pd.DataFrame(columns=columns)
    names = names or {}
    shares = json.loads(latest["positions"]) if isinstance(latest["positions"], str) else latest["positions"]
    targets = targets_of(snapshot.latest_decision)
    prices = dict(prices or {})
    if not prices and not snapshot.fills.empty:  # fall back to the last fill price per symbol
        for sym, price in snapshot.fills.sort_values("filled_at").groupby("symbol")["price"].last().items():
            prices[sym] = float(price)
    rows = []
    for sym in sorted(set(shares) | {s for s, w in targets.items() if w > 0}):
        q = int(shares.get(sym, 0))
        px = prices.get(sym)
        value = q * px if px is not None else np.nan
        rows.append({"symbol": sym, "name": names.get(sym, ""), "shares": q, "price": px, "value": value,
                     "weight": value / latest["equity"] if latest["equity"] else np.nan,
                     "target": targets.get(sym, 0.0)})
    return pd.DataFrame(rows, columns=columns)


def with_names(frame: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """`frame` with a `name` column right after `symbol` (the stock's name from the data)."""
    if "symbol" not in frame.columns:
        return frame
    out = frame.copy()
    out.insert(list(out.columns).index("symbol") + 1, "name", out["symbol"].map(lambda s: names.get(str(s), "")))
    return out


def normalised_curves(acct: pd.DataFrame) -> pd.DataFrame:
    """Long frame (day as a datetime, series, value) of the portfolio and KOSPI200, both starting
    at 100 on the first day, plus both drawdowns: what the charts plot, so their y-axes compare
    returns and a date axis gets proper ticks (the journal's day is text)."""
    if acct.empty:
        return pd.DataFrame(columns=["day", "series", "value", "drawdown"])
    day = pd.to_datetime(acct["day"])
    eq = acct["equity"].astype(float).to_numpy()
    frames = [pd.DataFrame({"day": day, "series": "portfolio", "value": 100 * eq / eq[0],
                            "drawdown": acct["drawdown"].astype(float)})]
    bench = acct["bench_equity"].astype(float)
    if bench.notna().any():
        first = bench.dropna().iloc[0]
        frames.append(pd.DataFrame({"day": day, "series": "KOSPI200", "value": 100 * bench / first,
                                    "drawdown": acct["bench_drawdown"].astype(float)}))
    return pd.concat(frames, ignore_index=True).dropna(subset=["value"])


def targets_of(decision: dict | None) -> dict[str, float]:
    """Target weights of a decision payload: {symbol: w} or parallel symbols/weights lists."""
    if not decision:
        return {}
    t = decision.get("targets") or decision.get("target_weights") or {}
    if isinstance(t, dict):
        return {str(k): float(v) for k, v in t.items()}
    syms = decision.get("symbols") or []
    return {str(s): float(w) for s, w in zip(syms, t)}


def regime_of(decision: dict | None) -> dict[str, float]:
    """Regime probabilities {bull: p, bear: p, sideways: p} from a decision payload, if it has them."""
    if not decision:
        return {}
    r = decision.get("regime")
    if isinstance(r, dict):
        probs = r.get("probabilities") or r.get("probs") or r
        return {str(k): float(v) for k, v in probs.items() if isinstance(v, (int, float))}
    probs = decision.get("regime_probabilities") or decision.get("regime_probs")
    if isinstance(probs, dict):
        return {str(k): float(v) for k, v in probs.items()}
    return {str(r): 1.0} if isinstance(r, str) else {}


def risk_of(decision: dict | None) -> dict:
    """VaR, CVaR, budget and trading state from a decision payload (whatever subset it has)."""
    from actors.metrics import risk_from_report
    return risk_from_report((decision or {}).get("risk"))


def _agents(decision: dict) -> dict[str, dict]:
    """{agent: {"weight": w, "targets": {...}}} from a payload: the decision service's `agents`
    (DecideResponse), or a flat `agent_weights` mapping."""
    agents = decision.get("agents")
    if isinstance(agents, dict) and agents:
        return {str(k): (v if isinstance(v, dict) else {"weight": v}) for k, v in agents.items()}
    flat = decision.get("agent_weights") or {}
    return {str(k): {"weight": v} for k, v in flat.items()} if isinstance(flat, dict) else {}


def agent_weights_history(decisions: list[dict]) -> pd.DataFrame:
    """day × agent weight in the ensemble."""
    rows = []
    for d in decisions:
        w = {a: float(v["weight"]) for a, v in _agents(d).items() if isinstance(v.get("weight"), (int, float))}
        if w:
            rows.append({"day": d["day"], **w})
    return pd.DataFrame(rows).set_index("day") if rows else pd.DataFrame()


def agent_daily_returns(decisions: list[dict], closes: pd.DataFrame) -> pd.DataFrame:
    """day × agent: the next-day return of each agent's own targets (close to close, no costs),
    i.e. how each agent would have done on its own. `closes`: date index × symbol columns."""
    closes = closes.sort_index()
    nxt = closes.shift(-1) / closes - 1.0
    rows = []
    for d in decisions:
        day = pd.Timestamp(d["day"])
        if day not in nxt.index or nxt.loc[day].isna().all():
            continue  # the next bar is not known yet
        r = {}
        for a, v in _agents(d).items():
            t = v.get("targets")
            if isinstance(t, dict):
                r[a] = float(sum(w * nxt.at[day, s] for s, w in t.items()
                                 if s in nxt.columns and pd.notna(nxt.at[day, s])))
        if r:
            rows.append({"day": d["day"], **r})
    return pd.DataFrame(rows).set_index("day") if rows else pd.DataFrame()


def closes_for(decisions: list[dict], data_dir: Path | None = None) -> pd.DataFrame:
    """Daily closes of every symbol the agents targeted, over the decision days (+ a week)."""
    symbols = sorted({s for d in decisions for v in _agents(d).values()
                      for s in (v.get("targets") or {}) if isinstance(v.get("targets"), dict)})
    if not symbols or not decisions:
        return pd.DataFrame()
    from market.data import DataPaths, load_prices
    paths = DataPaths(root=Path(data_dir)) if data_dir else DataPaths()
    end = (pd.Timestamp(decisions[-1]["day"]) + pd.Timedelta(days=10)).date()
    df = load_prices(paths.path("prices"), symbols, decisions[0]["day"], end)
    if df.is_empty():
        return pd.DataFrame()
    wide = df.select("date", "symbol", "close").to_pandas()
    wide["symbol"] = wide["symbol"].astype(str)
    return wide.pivot_table(index="date", columns="symbol", values="close")


def agent_performance(decisions: list[dict], closes: pd.DataFrame | None = None, window: int = 20) -> pd.DataFrame:
    """Each agent's latest ensemble weight and the compounded return of its own targets over the
    last `window` decisions whose next bar is known."""
    hist = agent_weights_history(decisions)
    recent = decisions[-(window + 1):]
    perf = agent_daily_returns(recent, closes) if closes is not None and not closes.empty else pd.DataFrame()
    agents = sorted(set(hist.columns) | set(perf.columns))
    col = f"return_{window}d"
    return pd.DataFrame([{"agent": a,
                          "weight": float(hist[a].iloc[-1]) if a in hist.columns else np.nan,
                          col: float((1 + perf[a].dropna()).prod() - 1) if a in perf.columns else np.nan}
                         for a in agents], columns=["agent", "weight", col])


# --- MLflow -----------------------------------------------------------------------------------
HEADLINE_METRICS = (("total_return", "total return"), ("sharpe", "Sharpe"), ("max_drawdown", "max DD"),
                    ("val_sharpe", "val Sharpe"))


def mlflow_overview(tracking_uri: str, max_runs: int = 20, journal_run_id: str | None = None) -> dict:
    """Recent runs of every experiment (backtests, demos, walk-forward, training trials) with
    their strategy, span and headline metrics, the registered model versions, and the MLflow run
    of the journal's own run (tag journal_run_id) if it was tracked; {"error": ...} when MLflow is
    absent. A sqlite store that does not exist yet is reported, not created (opening it would write)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.exists():
            return {"error": f"no MLflow store at {db} yet (no run tracked)", "runs": [], "models": [],
                    "this_run": None}
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    try:
        from mlflow.tracking import MlflowClient
        client = MlflowClient(tracking_uri=tracking_uri)
        experiments = client.search_experiments()
        names = {e.experiment_id: e.name for e in experiments}
        runs = client.search_runs(list(names), max_results=max_runs,
                                  order_by=["attributes.start_time DESC"]) if experiments else []
        run_rows = [_run_row(r, names) for r in runs]
        this_run = None
        if journal_run_id and experiments:
            hit = client.search_runs(list(names), filter_string=f"tags.journal_run_id = '{journal_run_id}'",
                                     max_results=1)
            this_run = _run_row(hit[0], names) if hit else None
        model_rows = []
        for m in client.search_registered_models():
            by_version: dict[str, list[str]] = {}
            for alias, version in (client.get_registered_model(m.name).aliases or {}).items():
                by_version.setdefault(str(version), []).append(alias)
            for v in client.search_model_versions(f"name='{m.name}'"):
                model_rows.append({"model": m.name, "version": int(v.version),
                                   "alias": ", ".join(sorted(by_version.get(str(v.version), []))),
                                   "status": v.status, "run_id": v.run_id,
                                   "created": pd.to_datetime(v.creation_timestamp, unit="ms", utc=True)})
        return {"runs": run_rows, "models": sorted(model_rows, key=lambda r: (r["model"], -r["version"])),
                "this_run": this_run}
    except Exception as exc:  # unreachable server, old schema: the dashboard still shows trading
        return {"error": f"MLflow at {tracking_uri}: {str(exc).splitlines()[0][:200]}", "runs": [], "models": [],
                "this_run": None}


def _run_row(r, experiments: dict[str, str]) -> dict:
    p, m = r.data.params, r.data.metrics
    row = {"run": r.info.run_name, "experiment": experiments.get(r.info.experiment_id, ""),
           "strategy": p.get("strategy") or p.get("algo") or r.data.tags.get("algo", ""),
           "span": p.get("span", ""), "status": r.info.status,
           "started": pd.to_datetime(r.info.start_time, unit="ms", utc=True).strftime("%Y-%m-%d %H:%M"),
           "run_id": r.info.run_id}
    row.update({label: m.get(key) for key, label in HEADLINE_METRICS})
    return row
