"""Streamlit dashboard: `trader dashboard` (or `streamlit run dashboard/app.py`).

Reads the journal (read-only) and MLflow; never writes, never talks to the broker, so it cannot
block or change trading. The page body is a fragment that re-runs every dashboard.refresh_s
seconds, so it follows a running loop.
"""
from __future__ import annotations

import sys
from pathlib import Path

import altair as alt
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
    return "—" if x is None or pd.isna(x) else ("-" if x < 0 else "") + f"₩{abs(x):,.0f}"


def pct(x) -> str:
    return "—" if x is None or pd.isna(x) else f"{x:.2%}"


# distinct colours, the same in every chart: the portfolio blue, KOSPI200 orange
SERIES_COLOURS = alt.Scale(domain=["portfolio", "KOSPI200"], range=["#1f4e99", "#e67e22"])


@st.cache_data(ttl=3600)
def names() -> dict[str, str]:
    """KRX code → stock name from the shipped symbols file (005930 → 삼성전자)."""
    from market.data import DataPaths, stock_names

    return stock_names(DataPaths(root=Path(SETTINGS.data_dir)) if SETTINGS.data_dir else DataPaths())


def date_x(title: str | None = None) -> alt.X:
    # a temporal axis: Vega-Lite picks a few month/week ticks instead of labelling every day
    return alt.X("day:T", title=title, axis=alt.Axis(format="%Y-%m-%d", labelAngle=0, tickCount=8))


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
    # two rows of three: a card is wide enough for ₩ amounts in the hundreds of millions
    top, bottom = st.columns(3), st.columns(3)
    top[0].metric("Equity", krw(latest["equity"]), pct(latest["equity"] / first_eq - 1) + " since start")
    top[1].metric("Cash", krw(latest["cash"]), pct(latest["cash"] / latest["equity"]) + " of equity"
                  if latest["equity"] else None, delta_color="off", delta_arrow="off")
    pnl = latest["pnl"]
    prev = latest["equity"] - pnl if pd.notna(pnl) else None
    top[2].metric("Daily P&L", krw(pnl), pct(pnl / prev) if prev else None)
    bottom[0].metric("Drawdown", pct(latest["drawdown"]), f"max {pct(acct['drawdown'].min())}", delta_color="off", delta_arrow="off")
    bench = latest.get("bench_equity")
    bottom[1].metric("KOSPI200 (same start)", pct(bench / first_eq - 1) if bench is not None and pd.notna(bench)
                     else "—", krw(bench) if bench is not None and pd.notna(bench) else None, delta_color="off", delta_arrow="off")
    bottom[2].metric("As of", str(latest["day"]), f"{len(acct)} trading days", delta_color="off", delta_arrow="off")

    curves = data.normalised_curves(acct)
    left, right = st.columns(2)
    left.subheader("Equity vs KOSPI200 (both start at 100)")
    colour = alt.Color("series:N", scale=SERIES_COLOURS, legend=alt.Legend(orient="top", title=None))
    left.altair_chart(alt.Chart(curves).mark_line().encode(
        x=date_x(), y=alt.Y("value:Q", title="growth of 100", scale=alt.Scale(zero=False)), color=colour,
        tooltip=[alt.Tooltip("day:T", format="%Y-%m-%d"), "series:N", alt.Tooltip("value:Q", format=".1f")]),
        width="stretch")
    right.subheader("Drawdown")
    right.altair_chart(alt.Chart(curves).mark_line().encode(
        x=date_x(), y=alt.Y("drawdown:Q", title="drawdown", axis=alt.Axis(format="%")), color=colour,
        tooltip=[alt.Tooltip("day:T", format="%Y-%m-%d"), "series:N", alt.Tooltip("drawdown:Q", format=".2%")]),
        width="stretch")
    st.subheader("Daily P&L")
    daily = acct.assign(day=pd.to_datetime(acct["day"])).dropna(subset=["pnl"])
    st.altair_chart(alt.Chart(daily).mark_bar().encode(
        x=date_x(), y=alt.Y("pnl:Q", title="KRW", axis=alt.Axis(format=",.0f")),
        color=alt.condition("datum.pnl >= 0", alt.value("#27ae60"), alt.value("#c0392b")),
        tooltip=[alt.Tooltip("day:T", format="%Y-%m-%d"), alt.Tooltip("pnl:Q", format=",.0f")]),
        width="stretch")


def live_section(snap: data.Snapshot):
    """The running session at live marks (the session watch journals the book at every poll)."""
    if not snap.session:
        return
    last = snap.session[-1]
    at = pd.Timestamp(last["at"])
    st.subheader(f"Live session {at:%Y-%m-%d}: marks at {at:%H:%M:%S}")
    table = data.live_marks_table(snap, names=names())
    pnl = data.session_pnl(snap)
    cards = st.columns(3)
    if last["equity"] is not None:
        cards[0].metric("P&L at live marks", krw(last["equity"] - last["day_start_equity"]),
                        pct(last["equity"] / last["day_start_equity"] - 1) if last["day_start_equity"] else None)
    else:
        cards[0].metric("P&L at live marks", "—", "a held name has no fresh mark", delta_color="off", delta_arrow="off")
    cards[1].metric("Equity at live marks", krw(last["equity"]), f"day start {krw(last['day_start_equity'])}",
                    delta_color="off", delta_arrow="off")
    unmarked = int(table["mark"].isna().sum()) if not table.empty else 0
    cards[2].metric("Held names", f"{len(table)}", f"{unmarked} without a fresh mark" if unmarked else "all marked",
                    delta_color="off", delta_arrow="off")
    left, right = st.columns(2)
    if table.empty:
        left.write("No held names.")
    else:
        shown = table.assign(shares=table["shares"].map(lambda q: f"{q:,}"), mark=table["mark"].map(krw),
                             reference=table["reference"].map(krw), change=table["change"].map(pct),
                             pnl=table["pnl"].map(krw))
        left.table(shown.rename(columns={"reference": "last close", "pnl": "P&L vs last close"}).set_index("symbol"))
    if len(pnl) > 1:
        right.altair_chart(alt.Chart(pnl).mark_line(color="#1f4e99").encode(
            x=alt.X("at:T", title=None, axis=alt.Axis(format="%H:%M", labelAngle=0)),
            y=alt.Y("pnl_pct:Q", title="P&L at live marks", axis=alt.Axis(format="%")),
            tooltip=[alt.Tooltip("at:T", format="%H:%M:%S"), alt.Tooltip("pnl:Q", format=",.0f"),
                     alt.Tooltip("pnl_pct:Q", format=".2%")]), width="stretch")


def positions_section(snap: data.Snapshot):
    st.subheader("Positions and weights")
    table = data.positions_table(snap, names=names())
    if table.empty:
        st.write("No positions.")
        return
    shown = table.assign(price=table["price"].map(krw), value=table["value"].map(krw),
                         shares=table["shares"].map(lambda q: f"{q:,}"),
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
        left.metric("CVaR (99%, 1 day)", pct(risk.get("cvar")), f"budget {pct(budget)}", delta_color="off", delta_arrow="off")
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
            weights = hist.reset_index().melt("day", var_name="agent", value_name="weight")
            weights["day"] = pd.to_datetime(weights["day"])
            right.altair_chart(alt.Chart(weights).mark_line().encode(
                x=date_x(), y=alt.Y("weight:Q", title="weight in the ensemble", axis=alt.Axis(format="%")),
                color=alt.Color("agent:N", scale=alt.Scale(scheme="tableau10"), legend=alt.Legend(orient="top")),
                tooltip=[alt.Tooltip("day:T", format="%Y-%m-%d"), "agent:N", alt.Tooltip("weight:Q", format=".1%")]),
                width="stretch")


def orders_section(snap: data.Snapshot):
    left, right = st.columns(2)
    left.subheader(f"Orders (latest {len(snap.orders)})")
    orders = data.with_names(snap.orders.head(20), names())
    left.table(orders.set_index("client_order_id")[["decided_at", "symbol", "name", "side", "qty", "state",
                                                     "filled_qty", "reason"]])
    right.subheader(f"Fills (latest {len(snap.fills)})")
    fills = data.with_names(snap.fills.head(20), names()).assign(
        price=lambda f: f["price"].map(krw), commission=lambda f: f["commission"].map(krw),
        tax=lambda f: f["tax"].map(krw))
    right.table(fills.set_index("filled_at")[["symbol", "name", "side", "qty", "price", "commission", "tax"]])


def mlflow_section(journal_run_id: str | None = None):
    st.subheader("Runs and models (MLflow)")
    ov = data.mlflow_overview(SETTINGS.mlflow.tracking_uri or default_tracking_uri(), journal_run_id=journal_run_id)
    if ov.get("error"):
        st.caption(ov["error"])
    this = ov.get("this_run")
    if this:
        st.caption(f"This journal's run in MLflow: **{this['run']}** (experiment {this['experiment']}, "
                   f"run id `{this['run_id']}`)")
    st.write("Recent runs: backtests, demos, walk-forward reports, training trials")
    if ov["runs"]:
        runs = pd.DataFrame(ov["runs"])
        for col in ("total return", "max DD"):
            runs[col] = runs[col].map(pct)
        for col in ("Sharpe", "val Sharpe"):
            runs[col] = runs[col].map(lambda v: "—" if v is None or pd.isna(v) else f"{v:.2f}")
        st.table(runs.drop(columns=["run_id"]).set_index("run"))
    else:
        st.write("No runs tracked yet.")
    st.write("Registered model versions")
    if ov["models"]:
        st.table(pd.DataFrame(ov["models"]))
    else:
        st.write("No registered models yet.")


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
    live_section(snap)
    positions_section(snap)
    risk_section(snap)
    orders_section(snap)
    mlflow_section(snap.run_id)


header()
body()
