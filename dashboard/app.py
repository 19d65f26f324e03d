"""Streamlit dashboard: `trader dashboard` (or `streamlit run dashboard/app.py`).

Reads the journal (read-only) and MLflow; never writes, never talks to the broker, so it cannot
block or change trading. The page body is a fragment that re-runs every dashboard.refresh_s
seconds, so it follows a running loop.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `streamlit run` puts only dashboard/ on the path

from cluster.settings import SettingsError, load_settings  # noqa: E402
from dashboard import data  # noqa: E402
from training.registry import default_tracking_uri  # noqa: E402

st.set_page_config(page_title="kis-ray-trader", layout="wide")

try:
    SETTINGS = load_settings()
except SettingsError as exc:
    st.error(f"settings: {exc}")
    st.stop()


def krw(x) -> str:
    return "—" if x is None or pd.isna(x) else f"₩{x:,.0f}"


def pct(x) -> str:
    return "—" if x is None or pd.isna(x) else f"{x:.2%}"


def header():
    st.title("kis-ray-trader")
    mode = SETTINGS.mode.value
    st.caption(f"mode **{mode}** · journal `{SETTINGS.journal}` · "
               f"[Ray dashboard]({SETTINGS.cluster.dashboard_url}) · [MLflow UI]({SETTINGS.mlflow.ui_url}) · "
               f"refresh every {SETTINGS.dashboard.refresh_s:g} s")


def account_section(snap: data.Snapshot):
    latest = snap.latest
    if latest is None:
        st.info("The journal has no account rows yet.")
        return
    acct = snap.account
    first_eq = float(acct["equity"].iloc[0])
    cols = st.columns(6)
    cols[0].metric("Equity", krw(latest["equity"]), pct(latest["equity"] / first_eq - 1) + " since start")
    cols[1].metric("Cash", krw(latest["cash"]))
    cols[2].metric("Daily P&L", krw(latest["pnl"]))
    cols[3].metric("Drawdown", pct(latest["drawdown"]), f"max {pct(acct['drawdown'].min())}", delta_color="off")
    bench = latest.get("bench_equity")
    cols[4].metric("KOSPI200 (same start)", krw(bench),
                   pct(bench / first_eq - 1) if bench is not None and pd.notna(bench) else None)
    cols[5].metric("As of", str(latest["day"]))

    left, right = st.columns(2)
    curve = acct.set_index("day")[["equity", "bench_equity"]].rename(columns={"bench_equity": "KOSPI200"})
    left.subheader("Equity vs KOSPI200")
    left.line_chart(curve)
    right.subheader("Drawdown")
    right.area_chart(acct.set_index("day")[["drawdown", "bench_drawdown"]].rename(
        columns={"bench_drawdown": "KOSPI200"}))
    st.subheader("Daily P&L")
    st.bar_chart(acct.set_index("day")["pnl"].dropna())


def positions_section(snap: data.Snapshot):
    st.subheader("Positions and weights")
    table = data.positions_table(snap)
    if table.empty:
        st.write("No positions.")
        return
    shown = table.assign(price=table["price"].map(krw), value=table["value"].map(krw),
                         weight=table["weight"].map(pct), target=table["target"].map(pct))
    st.table(shown.set_index("symbol"))


def risk_section(snap: data.Snapshot):
    dec = snap.latest_decision
    left, mid, right = st.columns(3)
    left.subheader("Risk")
    risk = data.risk_of(dec)
    if risk:
        budget = risk.get("budget", SETTINGS.trading.cvar_budget)
        left.metric("VaR (95%, 1 day)", pct(risk.get("var")))
        left.metric("CVaR (99%, 1 day)", pct(risk.get("cvar")), f"budget {pct(budget)}", delta_color="off")
        left.metric("Trading state", str(risk.get("state") or "—"))
    else:
        left.write("No risk figures in the decisions yet.")
    mid.subheader("Regime")
    regime = data.regime_of(dec)
    if regime:
        mid.bar_chart(pd.Series(regime, name="probability"))
        mid.table(pd.DataFrame({"probability": [pct(v) for v in regime.values()]}, index=list(regime)))
    else:
        mid.write("No regime in the decisions yet.")
    right.subheader("Agents")
    try:
        closes = data.closes_for(snap.decisions[-21:], SETTINGS.data_dir)
    except Exception:  # market data unavailable: weights still show
        closes = None
    perf = data.agent_performance(snap.decisions, closes)
    if perf.empty:
        right.write("No agent weights in the decisions yet.")
    else:
        right.table(perf.set_index("agent").map(lambda v: pct(v) if isinstance(v, float) else v))
        hist = data.agent_weights_history(snap.decisions)
        if len(hist) > 1:
            right.line_chart(hist)


def orders_section(snap: data.Snapshot):
    left, right = st.columns(2)
    left.subheader(f"Orders (latest {len(snap.orders)})")
    left.table(snap.orders.head(20).set_index("client_order_id")[["decided_at", "symbol", "side", "qty", "state",
                                                                   "filled_qty", "reason"]])
    right.subheader(f"Fills (latest {len(snap.fills)})")
    fills = snap.fills.head(20).assign(price=lambda f: f["price"].map(krw))
    right.table(fills.set_index("filled_at")[["symbol", "side", "qty", "price", "commission", "tax"]])


def mlflow_section():
    st.subheader("Training runs and models (MLflow)")
    ov = data.mlflow_overview(SETTINGS.mlflow.tracking_uri or default_tracking_uri())
    if ov.get("error"):
        st.caption(ov["error"])
    left, right = st.columns(2)
    left.write("Runs")
    if ov["runs"]:
        left.table(pd.DataFrame(ov["runs"]))
    else:
        left.write("No training runs yet.")
    right.write("Registered model versions")
    if ov["models"]:
        right.table(pd.DataFrame(ov["models"]))
    else:
        right.write("No registered models yet.")


@st.fragment(run_every=SETTINGS.dashboard.refresh_s)
def body():
    try:
        snap = data.read_snapshot(SETTINGS.journal)
    except data.JournalMissing as exc:
        st.warning(str(exc))
        mlflow_section()
        return
    except Exception as exc:  # a busy or half-written journal: show why, retry on the next refresh
        st.warning(f"cannot read the journal right now: {exc}")
        return
    account_section(snap)
    positions_section(snap)
    risk_section(snap)
    orders_section(snap)
    mlflow_section()


header()
body()
