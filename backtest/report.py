"""Backtest reports: one self-contained HTML file (PNG charts embedded as base64) + metrics.json.

Charts: equity against the benchmarks, drawdown, monthly-returns heatmap, rolling Sharpe and
exposure; then the metrics table. Figures are drawn with matplotlib's Agg canvas directly (no
pyplot state, no display needed).
"""
from __future__ import annotations

import base64
import functools
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
        return f"₩{value:,.0f}"
    return f"{value:.3f}"


# run settings shown in the report's "Run" table: how each is formatted
KRW_SETTINGS = ("cash", "min_trade_value")
RATE_SETTINGS = ("commission_rate", "slippage_range_frac")


def _setting(key: str, value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if key in KRW_SETTINGS:
            return _fmt(value, "krw")
        if key in RATE_SETTINGS:
            return f"{value * 100:.4g}%"
        if isinstance(value, int) or float(value).is_integer():
            return f"{int(value):,}" if abs(value) >= 10_000 else str(value)
    return str(value)


# fonts with Hangul, in order of preference: Debian's fonts-nanum and fonts-noto-cjk
# (.ci/system-setup.sh installs the first); matplotlib falls back glyph by glyph along the list
HANGUL_FONTS = ("NanumGothic", "Noto Sans CJK KR", "Noto Sans KR", "UnDotum")


def chart_style() -> dict:
    """rcParams for every chart of the project (reports, the demo's equity.png): DejaVu Sans for
    Latin text with a Hangul font behind it, so Korean stock names render instead of boxes."""
    return {"font.family": ["DejaVu Sans", *_installed_hangul_fonts()],
            "axes.spines.top": False, "axes.spines.right": False, "axes.titleweight": "normal", "axes.titlesize": "large",
            "axes.titlelocation": "left", "axes.unicode_minus": False}


@functools.cache
def _installed_hangul_fonts() -> tuple[str, ...]:
    """The HANGUL_FONTS matplotlib can draw with. Its font list is cached on disk the first time
    matplotlib runs; a font installed afterwards (fonts-nanum by .ci/system-setup.sh on a machine
    whose cache is older) is missing from that list, so the system font folders are searched and
    the Hangul files found there are registered."""
    from matplotlib import font_manager

    def known() -> tuple[str, ...]:
        names = {f.name for f in font_manager.fontManager.ttflist}
        return tuple(f for f in HANGUL_FONTS if f in names)

    if not known():
        for path in font_manager.findSystemFonts():
            try:
                if font_manager.get_font(path).family_name in HANGUL_FONTS:
                    font_manager.fontManager.addfont(path)
            except (OSError, RuntimeError):  # an unreadable or odd font file is not ours to judge
                continue
    return known()


def hangul_font_available() -> bool:
    return len(chart_style()["font.family"]) > 1


def date_axis(ax) -> None:
    """A few sensible date ticks (months, quarters or years by span), never every day."""
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def percent_axis(ax, decimals: int | None = None) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(xmax=100, decimals=decimals))


def headline(metrics: dict) -> str:
    """The equity chart's one-line metrics: total, CAGR, Sharpe, max drawdown, vs KOSPI200."""
    parts = [f"total {_signed(metrics.get('total_return'))}", f"CAGR {_signed(metrics.get('annual_return'))}",
             f"Sharpe {_ratio(metrics.get('sharpe'))}", f"max DD {_fmt(metrics.get('max_drawdown'), 'pct')}"]
    if metrics.get("benchmark_total_return") is not None:
        parts.append(f"KOSPI200 {_signed(metrics.get('benchmark_total_return'))}")
    return "  ·  ".join(parts)


def _ratio(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.2f}"


def _signed(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value * 100:+.1f}%"


def text_colour(rgba) -> str:
    """Black on light cells, white on dark ones (relative luminance, ITU-R BT.709)."""
    r, g, b = rgba[:3]
    return "white" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5 else "black"


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(w=12, h=3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
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


def charts(result: BacktestResult, benchmarks: dict[str, np.ndarray], metrics: dict | None = None,
           summary=None) -> dict[str, str]:
    import matplotlib

    with matplotlib.rc_context(chart_style()):
        return _charts(result, benchmarks, metrics or {}, summary)


def _charts(result: BacktestResult, benchmarks: dict[str, np.ndarray], metrics: dict, summary) -> dict[str, str]:
    from matplotlib.colors import Normalize

    dates = result.dates.astype("datetime64[D]").astype(object)
    eq = result.equity
    out = {}

    fig, ax = _figure(h=4.2)
    ax.plot(dates, (eq / eq[0] - 1) * 100, label=result.strategy or "strategy", lw=1.8, color="#1f4e99", zorder=3)
    colours = iter(["#e67e22", "#7f8c8d", "#27ae60", "#8e44ad"])
    for name, levels in benchmarks.items():
        lv = np.asarray(levels, dtype=float)
        ok = np.isfinite(lv)
        if ok.any():
            base = lv[np.argmax(ok)]
            ax.plot(np.array(dates)[ok], (lv[ok] / base - 1) * 100, label=name, lw=1.1, color=next(colours))
    ax.axhline(0, color="black", lw=0.5)
    ax.set_title(f"Cumulative return vs benchmarks\n{headline(metrics)}" if metrics
                 else "Cumulative return vs benchmarks", fontsize=11)
    percent_axis(ax)
    date_axis(ax)
    ax.grid(alpha=0.3)
    # below the plot, never over the lines
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=4, frameon=False, fontsize=9)
    out["equity"] = _png(fig)

    fig, ax = _figure(h=2.6)
    dd = M.drawdown(eq)
    ax.fill_between(dates, dd * 100, 0, color="#c0392b", alpha=0.5)
    ax.set_title(f"Drawdown (max {_fmt(float(np.min(dd)), 'pct')})")
    percent_axis(ax)
    date_axis(ax)
    ax.grid(alpha=0.3)
    out["drawdown"] = _png(fig)

    years, table = monthly_returns(result.dates, eq)
    fig, ax = _figure(h=max(2.2, 0.42 * len(years) + 1.2))
    lim = float(np.nanmax(np.abs(table))) if np.isfinite(table).any() else 0.1
    norm = Normalize(vmin=-lim * 100, vmax=lim * 100)
    image = ax.imshow(table * 100, cmap="RdYlGn", norm=norm, aspect="auto")
    ax.set_xticks(range(12), ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
    ax.set_yticks(range(len(years)), [str(y) for y in years])
    for spine in ax.spines.values():
        spine.set_visible(False)
    for i in range(len(years)):
        for j in range(12):
            if np.isfinite(table[i, j]):
                v = table[i, j] * 100
                ax.text(j, i, f"{v:+.1f}%", ha="center", va="center", fontsize=8,
                        color=text_colour(image.cmap(norm(v))))
    ax.set_title("Monthly returns")
    out["monthly"] = _png(fig)

    fig, ax = _figure(h=2.6)
    window = 126 if len(eq) > 252 else max(20, len(eq) // 4)
    rs = M.rolling_sharpe(result.returns, window)
    ax.plot(dates[1:], rs, color="#8e44ad", lw=1.0)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_title(f"Rolling Sharpe ({window} bars)")
    date_axis(ax)
    ax.grid(alpha=0.3)
    out["rolling_sharpe"] = _png(fig)

    fig, ax = _figure(h=2.6)
    ax.fill_between(dates, result.exposure * 100, 0, color="#16a085", alpha=0.5)
    ax.set_ylim(0, max(105, float(np.max(result.exposure)) * 100 + 5))
    ax.set_title("Exposure (of equity invested)")
    percent_axis(ax)
    date_axis(ax)
    ax.grid(alpha=0.3)
    out["exposure"] = _png(fig)

    if summary is not None and summary.trades.by_symbol:
        out["pnl_by_symbol"] = _pnl_chart(summary.trades.by_symbol)
    return out


def _pnl_chart(by_symbol, top: int = 8) -> str:
    """Horizontal bars: the best and worst symbols by P&L, labelled with their names (Hangul)."""
    rows = list(by_symbol[:top]) + [x for x in by_symbol[-top:] if x not in by_symbol[:top]]
    rows = rows[::-1]  # best on top
    fig, ax = _figure(h=max(2.4, 0.32 * len(rows) + 1.0))
    values = [x.pnl / 1e6 for x in rows]
    ax.barh(range(len(rows)), values, color=["#27ae60" if v >= 0 else "#c0392b" for v in values])
    ax.set_yticks(range(len(rows)), [f"{x.name} ({x.symbol})" if x.name else x.symbol for x in rows])
    ax.axvline(0, color="black", lw=0.6)
    ax.xaxis.set_major_formatter(lambda v, _: f"{'-' if v < 0 else ''}₩{abs(v):,.1f}M")
    ax.set_title("P&L by symbol, net of costs (best and worst)")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def _pnl_cell(pnl: int) -> str:
    sign = "+" if pnl > 0 else "-" if pnl < 0 else ""
    cls = ' class="neg"' if pnl < 0 else ""
    return f"<td{cls}>{sign}₩{abs(pnl):,}</td>"


def _summary_html(summary) -> str:
    """The terminal summary's tables (backtest/summary.py) as HTML: the run beside its benchmarks,
    per year, and the best and worst symbols by P&L with their names."""
    from backtest.summary import COMPARISON_COLUMNS

    def cell(v, kind):
        text = "–" if v is None else (_ratio(v) if kind == "num" else _signed(v) if kind == "pct"
                                       else _fmt(v, "pct"))
        cls = ' class="neg"' if isinstance(v, (int, float)) and kind != "num" and v < 0 else ""
        return f"<td{cls}>{text}</td>"

    head = "".join(f"<th>{html.escape(t)}</th>" for _, t, _ in COMPARISON_COLUMNS)
    body = "".join(f"<tr><td>{html.escape(r.label)}</td>" + "".join(cell(r.metrics.get(k), kind)
                                                              for k, _, kind in COMPARISON_COLUMNS) + "</tr>"
                   for r in summary.rows)
    parts = [f'<h2>Versus benchmarks (same days, same costs)</h2><table class="num"><tr><th></th>{head}</tr>{body}'
             "</table>"]
    labels = "".join(f"<th>{html.escape(r.label)}</th>" for r in summary.rows)
    years = "".join(f"<tr><td>{y}</td>" + "".join(cell(v, "pct") for v in vals) + "</tr>" for y, vals in summary.years)
    parts.append(f'<h2>Per year</h2><table class="num"><tr><th>year</th>{labels}</tr>{years}</table>')
    t = summary.trades
    win = "–" if t.win_rate is None else f"{t.win_rate * 100:.1f}%"
    hold = "–" if t.avg_holding_days is None else f"{t.avg_holding_days:.1f} trading days"
    parts.append(f"<p>Equity {_fmt(summary.starting_cash, 'krw')} → {_fmt(summary.final_equity, 'krw')}; "
                 f"costs {_fmt(t.commission + t.tax, 'krw')} (commission {_fmt(t.commission, 'krw')}, sell tax "
                 f"{_fmt(t.tax, 'krw')}); {t.round_trips:,} round trips, win rate {win}, average holding {hold}.</p>")
    if t.by_symbol:
        best = list(t.by_symbol[:5])
        worst = [x for x in reversed(t.by_symbol[-5:]) if x not in best]
        rows = "".join(f"<tr><td>{tag}</td><td>{html.escape(x.symbol)}</td><td>{html.escape(x.name)}</td>"
                       f"{_pnl_cell(x.pnl)}</tr>" for tag, group in (("top", best), ("bottom", worst)) for x in group)
        parts.append('<h2>P&amp;L by symbol (net of costs)</h2><table class="num pnl"><tr><th></th><th>symbol</th>'
                     f"<th>name</th><th>P&amp;L</th></tr>{rows}</table>")
    return "".join(parts)


def write_report(result: BacktestResult, out_dir: Path | str, metrics: dict, benchmarks: dict[str, np.ndarray],
                 title: str = "", meta: dict | None = None, summary=None) -> Path:
    """Write out_dir/report.html (self-contained) and out_dir/metrics.json; return the HTML path.
    `summary` (backtest.summary.RunSummary): the benchmark, per-year and per-symbol tables too."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({**metrics, **(meta or {})}, indent=2, default=str))
    images = charts(result, benchmarks, metrics, summary)
    rows = "".join(f"<tr><td>{html.escape(METRIC_LABELS[k][0])}</td><td>{_fmt(metrics.get(k), METRIC_LABELS[k][1])}</td></tr>"
                   for k in METRIC_LABELS if k in metrics)
    meta_rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_setting(str(k), v))}</td></tr>"
                        for k, v in (meta or {}).items())
    imgs = {k: f'<img alt="{k}" src="data:image/png;base64,{v}"/>' for k, v in images.items()}
    head_imgs = imgs.pop("equity", "") + imgs.pop("drawdown", "")
    pnl_img = imgs.pop("pnl_by_symbol", "")
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title or result.strategy)}</title>
<style>body{{font-family:"DejaVu Sans","NanumGothic","Noto Sans CJK KR",sans-serif;max-width:1280px;margin:1.5em auto;
padding:0 1.5em;color:#222}}
img{{width:100%;display:block;margin:1em 0}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}
th{{text-align:right;padding:3px 12px;border-bottom:2px solid #999}}th:first-child{{text-align:left}}
td{{border-bottom:1px solid #ddd;padding:3px 12px}}td:last-child{{text-align:right}}
table.num td{{text-align:right;font-variant-numeric:tabular-nums}}table.num td:first-child{{text-align:left}}
td.neg{{color:#c0392b}}table.pnl td:nth-child(-n+3){{text-align:left}}
.grid{{display:grid;grid-template-columns:1fr 1fr;gap:2em}}</style></head>
<body><h1>{html.escape(title or result.strategy)}</h1>
<p>{html.escape(str(result.dates[0]))} → {html.escape(str(result.dates[-1]))}; decided on each close, filled at
the next bar through the shared accounting (tick grid, price limits, commission, dated sell tax, slippage).</p>
{head_imgs}{_summary_html(summary) if summary is not None else ""}{pnl_img}
<div class="grid"><div><h2>Metrics</h2><table>{rows}</table></div>
<div><h2>Run</h2><table>{meta_rows}</table></div></div>{"".join(imgs.values())}</body></html>"""
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path
