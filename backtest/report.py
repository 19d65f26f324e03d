"""Backtest reports: one self-contained HTML file (PNG charts embedded as base64) + metrics.json.

Charts: equity against the benchmarks, drawdown, monthly-returns heatmap, rolling Sharpe and
exposure; then the metrics table. Figures are drawn with matplotlib's Agg canvas directly (no
pyplot state, no display needed).
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from backtest import metrics as M
from backtest.engine import BacktestResult

METRIC_LABELS = {
    "total_return": ("Total return", "pct"), "annual_return": ("Annual return (CAGR)", "pct"),
    "annual_volatility": ("Annual volatility", "pct"), "sharpe": ("Sharpe", "num"),
    "sortino": ("Sortino", "num"), "calmar": ("Calmar", "num"), "max_drawdown": ("Max drawdown", "pct"),
    "max_drawdown_duration": ("Max drawdown duration (bars)", "int"), "hit_rate": ("Hit rate (days up)", "pct"),
    "information_ratio": ("Information ratio vs KOSPI200", "num"), "tracking_error": ("Tracking error", "pct"),
    "beta": ("Beta vs KOSPI200", "num"), "alpha_annual": ("Alpha (annual, simple)", "pct"),
    "benchmark_total_return": ("KOSPI200 total return", "pct"), "turnover": ("Turnover (per year, one-way)", "num"),
    "costs": ("Costs paid (KRW)", "krw"), "costs_pct_of_start": ("Costs / starting capital", "pct"),
    "orders": ("Fills", "int"), "days": ("Days", "int"), "final_equity": ("Final equity (KRW)", "krw"),
}


def _fmt(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if kind == "pct":
        return f"{value * 100:.2f}%"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "krw":
        return f"{value:,.0f}"
    return f"{value:.3f}"


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(w=10, h=3.4):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    return fig, fig.add_subplot(111)


def monthly_returns(dates: np.ndarray, equity: np.ndarray) -> tuple[list[int], np.ndarray]:
    """(years, 12-column matrix of monthly returns, NaN where the month is not in the run)."""
    # row 0 is the starting account (the close before the first trading day): it opens the first
    # month's return but is no month of its own
    months = np.asarray(dates, dtype="datetime64[M]")[1:]
    eq = np.asarray(equity, dtype=float)
    keys, first = np.unique(months, return_index=True)
    last = np.r_[first[1:] - 1, len(months) - 1]
    # a month's return runs from the previous month's last close (or the start) to its own
    prev = np.r_[eq[0], eq[1:][last[:-1]]]
    rets = eq[1:][last] / prev - 1.0
    years = sorted({int(str(k)[:4]) for k in keys})
    table = np.full((len(years), 12), np.nan)
    for k, r in zip(keys, rets):
        y, m = int(str(k)[:4]), int(str(k)[5:7])
        table[years.index(y), m - 1] = r
    return years, table


def charts(result: BacktestResult, benchmarks: dict[str, np.ndarray]) -> dict[str, str]:
    dates = result.dates.astype("datetime64[D]").astype(object)
    eq = result.equity
    out = {}

    fig, ax = _figure()
    ax.plot(dates, eq / eq[0], label=result.strategy or "strategy", lw=1.6, color="#1f4e99")
    for name, levels in benchmarks.items():
        lv = np.asarray(levels, dtype=float)
        ok = np.isfinite(lv)
        if ok.any():
            base = lv[np.argmax(ok)]
            ax.plot(np.array(dates)[ok], lv[ok] / base, label=name, lw=1.0)
    ax.set_title("Equity (growth of 1) vs benchmarks")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    out["equity"] = _png(fig)

    fig, ax = _figure(h=2.6)
    dd = M.drawdown(eq)
    ax.fill_between(dates, dd * 100, 0, color="#c0392b", alpha=0.5)
    ax.set_title("Drawdown (%)")
    ax.grid(alpha=0.3)
    out["drawdown"] = _png(fig)

    years, table = monthly_returns(result.dates, eq)
    fig, ax = _figure(h=max(2.0, 0.35 * len(years) + 1.0))
    lim = np.nanmax(np.abs(table)) if np.isfinite(table).any() else 0.1
    ax.imshow(table * 100, cmap="RdYlGn", vmin=-lim * 100, vmax=lim * 100, aspect="auto")
    ax.set_xticks(range(12), ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
    ax.set_yticks(range(len(years)), [str(y) for y in years])
    for i in range(len(years)):
        for j in range(12):
            if np.isfinite(table[i, j]):
                ax.text(j, i, f"{table[i, j] * 100:.1f}", ha="center", va="center", fontsize=7)
    ax.set_title("Monthly returns (%)")
    out["monthly"] = _png(fig)

    fig, ax = _figure(h=2.6)
    window = 126 if len(eq) > 252 else max(20, len(eq) // 4)
    rs = M.rolling_sharpe(result.returns, window)
    ax.plot(dates[1:], rs, color="#8e44ad", lw=1.0)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_title(f"Rolling Sharpe ({window} bars)")
    ax.grid(alpha=0.3)
    out["rolling_sharpe"] = _png(fig)

    fig, ax = _figure(h=2.6)
    ax.fill_between(dates, result.exposure * 100, 0, color="#16a085", alpha=0.5)
    ax.set_ylim(0, max(105, float(np.max(result.exposure)) * 100 + 5))
    ax.set_title("Exposure (% of equity invested)")
    ax.grid(alpha=0.3)
    out["exposure"] = _png(fig)
    return out


def write_report(result: BacktestResult, out_dir: Path | str, metrics: dict, benchmarks: dict[str, np.ndarray],
                 title: str = "", meta: dict | None = None) -> Path:
    """Write out_dir/report.html (self-contained) and out_dir/metrics.json; return the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({**metrics, **(meta or {})}, indent=2, default=str))
    images = charts(result, benchmarks)
    rows = "".join(f"<tr><td>{html.escape(METRIC_LABELS[k][0])}</td><td>{_fmt(metrics.get(k), METRIC_LABELS[k][1])}</td></tr>"
                   for k in METRIC_LABELS if k in metrics)
    meta_rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                        for k, v in (meta or {}).items())
    imgs = "".join(f'<img alt="{k}" src="data:image/png;base64,{v}"/>' for k, v in images.items())
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title or result.strategy)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}
img{{max-width:100%;display:block;margin:1em 0}}table{{border-collapse:collapse}}
td{{border-bottom:1px solid #ddd;padding:3px 12px}}td:last-child{{text-align:right}}</style></head>
<body><h1>{html.escape(title or result.strategy)}</h1>
<p>{html.escape(str(result.dates[0]))} → {html.escape(str(result.dates[-1]))}; decided on each close, filled at
the next bar through the shared accounting (tick grid, price limits, commission, dated sell tax, slippage).</p>
<h2>Metrics</h2><table>{rows}</table>{imgs}
<h2>Run</h2><table>{meta_rows}</table></body></html>"""
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path
