"""What the dashboard shows, read from the journal (SQLite, read-only) and MLflow.

Plain functions returning pandas frames / dicts, so they are testable without Streamlit. The
journal is opened with `mode=ro` on a fresh connection per read: the dashboard never takes a
write lock and never holds the trading loop up (WAL readers do not block the writer).
"""
from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


class JournalMissing(FileNotFoundError):
    """No journal at the configured path yet (the loop has not run)."""


def _connect(path: Path) -> sqlite3.Connection:
    path = Path(path)
    if not path.exists():
        raise JournalMissing(f"no journal at {path}: start the loop (`trader run` or `trader demo`) first")
    return sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=2.0)


def _frame(path: Path, sql: str, args: tuple = ()) -> pd.DataFrame:
    db = _connect(path)
    try:
        return pd.read_sql_query(sql, db, params=args)
    finally:
        db.close()


@dataclass
class Snapshot:
    """Everything one dashboard refresh needs, read in one go."""
    account: pd.DataFrame                      # day, cash, equity, benchmark, drawdown, bench_equity, pnl
    orders: pd.DataFrame
    fills: pd.DataFrame
    decisions: list[dict] = field(default_factory=list)   # oldest first, each {"day":..., **payload}

    @property
    def latest(self) -> dict | None:
        return None if self.account.empty else self.account.iloc[-1].to_dict()

    @property
    def latest_decision(self) -> dict | None:
        return self.decisions[-1] if self.decisions else None


def read_snapshot(path: Path, max_rows: int = 200) -> Snapshot:
    acct = _frame(path, "SELECT day, cash, equity, positions, benchmark FROM account ORDER BY day")
    acct = equity_curve(acct)
    orders = _frame(path, "SELECT client_order_id, decided_at, symbol, side, qty, order_type, limit_price, state,"
                          " filled_qty, reason FROM orders ORDER BY decided_at DESC, client_order_id LIMIT ?",
                    (max_rows,))
    fills = _frame(path, "SELECT filled_at, symbol, side, qty, price, commission, tax, client_order_id FROM fills"
                         " ORDER BY filled_at DESC, id DESC LIMIT ?", (max_rows,))
    dec = _frame(path, "SELECT day, payload FROM decisions ORDER BY day")
    decisions = []
    for day, payload in zip(dec["day"], dec["payload"]):
        try:
            body = json.loads(payload)
        except json.JSONDecodeError:
            body = {"error": "unreadable payload"}
        decisions.append({"day": day, **(body if isinstance(body, dict) else {"payload": body})})
    return Snapshot(acct, orders, fills, decisions)


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


def positions_table(snapshot: Snapshot, prices: dict[str, float] | None = None) -> pd.DataFrame:
    """Latest positions (shares) with value and weight of equity when a price is known, plus the
    target weight of the latest decision."""
    latest = snapshot.latest
    if latest is None:
        return pd.DataFrame(columns=["symbol", "shares", "price", "value", "weight", "target"])
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
        rows.append({"symbol": sym, "shares": q, "price": px, "value": value,
                     "weight": value / latest["equity"] if latest["equity"] else np.nan,
                     "target": targets.get(sym, 0.0)})
    return pd.DataFrame(rows, columns=["symbol", "shares", "price", "value", "weight", "target"])


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
    if not decision:
        return {}
    r = decision.get("risk") or {}
    if not isinstance(r, dict):
        return {}
    keys = {"var": ("var", "var_95", "VaR"), "cvar": ("cvar", "cvar_95", "CVaR"),
            "budget": ("budget", "var_budget"), "state": ("state", "trading_state")}
    return {k: next((r[a] for a in aliases if a in r), None) for k, aliases in keys.items()}


def agent_weights_history(decisions: list[dict]) -> pd.DataFrame:
    """day × agent weight, from each payload's agent weights."""
    rows = []
    for d in decisions:
        w = d.get("agent_weights") or d.get("weights") or {}
        if isinstance(w, dict) and w:
            rows.append({"day": d["day"], **{str(k): float(v) for k, v in w.items()}})
    return pd.DataFrame(rows).set_index("day") if rows else pd.DataFrame()


def agent_performance(decisions: list[dict], window: int = 20) -> pd.DataFrame:
    """Each agent's latest weight and its recent performance, if the payloads report one
    (`agent_returns` / `agent_performance`: {agent: daily return}) — summed over `window` days."""
    hist = agent_weights_history(decisions)
    perf_rows = []
    for d in decisions[-window:]:
        p = d.get("agent_returns") or d.get("agent_performance") or {}
        if isinstance(p, dict) and p:
            perf_rows.append({str(k): float(v) for k, v in p.items() if isinstance(v, (int, float))})
    perf = pd.DataFrame(perf_rows)
    agents = sorted(set(hist.columns) | set(perf.columns))
    out = []
    for a in agents:
        out.append({"agent": a,
                    "weight": float(hist[a].iloc[-1]) if a in hist and not hist.empty else np.nan,
                    f"return_{window}d": float((1 + perf[a].dropna()).prod() - 1) if a in perf else np.nan})
    return pd.DataFrame(out)


# --- MLflow -----------------------------------------------------------------------------------
def mlflow_overview(tracking_uri: str, max_runs: int = 20) -> dict:
    """Recent training runs and registered model versions; {"error": ...} when MLflow is absent.

    A sqlite store that does not exist yet is reported, not created (opening it would write)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.exists():
            return {"error": f"no MLflow store at {db} yet (no training run logged)", "runs": [], "models": []}
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    try:
        from mlflow.tracking import MlflowClient
        client = MlflowClient(tracking_uri=tracking_uri)
        experiments = client.search_experiments()
        runs = client.search_runs([e.experiment_id for e in experiments], max_results=max_runs,
                                  order_by=["attributes.start_time DESC"]) if experiments else []
        run_rows = [{"run": r.info.run_name, "experiment": next((e.name for e in experiments
                                                                  if e.experiment_id == r.info.experiment_id), ""),
                     "status": r.info.status,
                     "started": pd.to_datetime(r.info.start_time, unit="ms", utc=True),
                     **{k: v for k, v in list(r.data.metrics.items())[:6]}} for r in runs]
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
        return {"runs": run_rows, "models": sorted(model_rows, key=lambda r: (r["model"], -r["version"]))}
    except Exception as exc:  # unreachable server, old schema: the dashboard still shows trading
        return {"error": f"MLflow at {tracking_uri}: {str(exc).splitlines()[0][:200]}", "runs": [], "models": []}
