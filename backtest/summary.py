"""The terminal summary of a run (`trader backtest`, `trader demo`): plain formatted tables.

Every headline number is taken from the metrics dicts that backtest/metrics.py computed (the
strategy's, KOSPI200's and the equal-weight basket's on the same span): nothing here computes a
second Sharpe or drawdown that could drift from metrics.json. What the metrics do not have is
derived here once, from the run's own records:

* period returns: the monthly table of backtest/report.py, compounded into years;
* trades: fills matched first-in first-out per symbol. A *round trip* is one sell fill with the
  lots it closes; it wins when its proceeds beat the lots' cost, commission and tax included.
  The holding period is the share-weighted number of trading days from each lot's buy to its sell;
* P&L per symbol: sells − buys − commission − tax + the final holding at the final close, in KRW.
  The symbols' P&L adds up to final equity − starting cash (the only other account item is cash).
"""
from __future__ import annotations

import datetime as dt
import math
import unicodedata
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from backtest.report import monthly_returns

# headline rows of the comparison table: metrics key, column title, format kind
COMPARISON_COLUMNS = (("total_return", "total", "pct"), ("annual_return", "CAGR", "pct"),
                      ("annual_volatility", "vol", "share"), ("sharpe", "Sharpe", "num"),
                      ("max_drawdown", "max DD", "share"))
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class SeriesRow:
    """One line of the comparison: a label and the metrics dict computed for that series."""

    label: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class SymbolPnl:
    symbol: str
    name: str
    pnl: int  # KRW, net of commission and tax


@dataclass(frozen=True)
class TradeStats:
    round_trips: int
    wins: int
    avg_holding_days: float | None  # None when nothing was sold
    commission: int
    tax: int
    by_symbol: tuple[SymbolPnl, ...]  # best first

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.round_trips if self.round_trips else None


@dataclass(frozen=True)
class RunSummary:
    title: str
    start: str  # the first trading day; the account opens at the close before it (`opening_close`)
    end: str
    opening_close: str
    starting_cash: float
    final_equity: float
    rows: tuple[SeriesRow, ...]  # the strategy first, then its benchmarks
    years: tuple[tuple[int, tuple[float | None, ...]], ...]  # (year, one return per row)
    month_years: tuple[int, ...]
    month_table: tuple[tuple[float | None, ...], ...]  # the strategy: years × 12
    trades: TradeStats
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, rounded: ratios to 6 decimals, KRW to whole won."""
        d = asdict(self)
        d["rows"] = [{"label": r.label, **r.metrics} for r in self.rows]
        d["years"] = [{"year": y, **{r.label: v for r, v in zip(self.rows, vals)}} for y, vals in self.years]
        d["months"] = {str(y): dict(zip(MONTHS, row)) for y, row in zip(self.month_years, self.month_table)}
        del d["month_years"], d["month_table"]
        d["trades"]["win_rate"] = self.trades.win_rate
        return rounded(d)


def rounded(value: Any, digits: int = 6) -> Any:
    """Floats rounded for people and diffs: ratios to `digits` decimals (0.19024346000000003 →
    0.190243); amounts (|v| ≥ 1,000 and whole, or ≥ 100,000: KRW) to whole won; NaN/inf → None."""
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return None
        if abs(v) >= 1e5 or (abs(v) >= 1e3 and v.is_integer()):
            return round(v)
        return round(v, digits)
    if isinstance(value, np.integer):
        return int(value)
    return value


# --- numbers derived from the run's records -------------------------------------------------
def yearly_from_monthly(years: list[int], table: np.ndarray) -> list[float]:
    """Each year's return compounded from its months (the year's first month opens at the
    previous year's last close, so the years chain exactly into the total)."""
    return [float(np.prod(1.0 + row[np.isfinite(row)]) - 1.0) for row in table]


def trade_stats(fills: pl.DataFrame, calendar: np.ndarray, final_holdings: dict[str, int],
                final_close: dict[str, float], names: dict[str, str] | None = None) -> TradeStats:
    """Round trips (FIFO), holding periods and P&L per symbol from fills with columns date,
    symbol, side, qty, price, commission, tax (the engine's and the journal's layout)."""
    names = names or {}
    cal = np.asarray(calendar, dtype="datetime64[D]")
    lots: dict[str, deque] = {}  # symbol -> [bar, shares left, cost per share incl. buy commission]
    flow: dict[str, float] = {}
    round_trips = wins = 0
    held_share_days = sold_shares = 0.0
    rows = fills.sort("date", maintain_order=True).iter_rows(named=True) if len(fills) else []
    for f in rows:
        sym, qty, px = f["symbol"], int(f["qty"]), int(f["price"])
        bar = int(np.searchsorted(cal, np.datetime64(f["date"], "D")))
        cost = int(f["commission"]) + int(f["tax"])
        if f["side"] == "buy":
            flow[sym] = flow.get(sym, 0.0) - qty * px - cost
            lots.setdefault(sym, deque()).append([bar, qty, (qty * px + cost) / qty])
            continue
        flow[sym] = flow.get(sym, 0.0) + qty * px - cost
        left, basis = qty, 0.0
        queue = lots.setdefault(sym, deque())
        while left > 0 and queue:
            lot = queue[0]
            take = min(left, lot[1])
            basis += take * lot[2]
            held_share_days += take * (bar - lot[0])
            sold_shares += take
            lot[1] -= take
            left -= take
            if lot[1] == 0:
                queue.popleft()
        round_trips += 1
        wins += int(qty * px - cost > basis)
    pnl = {s: v + final_holdings.get(s, 0) * final_close.get(s, 0.0) for s, v in flow.items()}
    for s, q in final_holdings.items():  # held from before the first fill (not in the engine/demo)
        pnl.setdefault(s, q * final_close.get(s, 0.0))
    by_symbol = sorted((SymbolPnl(s, names.get(s, ""), round(v)) for s, v in pnl.items()),
                       key=lambda x: (-x.pnl, x.symbol))
    commission = int(fills["commission"].sum()) if len(fills) else 0
    tax = int(fills["tax"].sum()) if len(fills) else 0
    return TradeStats(round_trips=round_trips, wins=wins,
                      avg_holding_days=held_share_days / sold_shares if sold_shares else None,
                      commission=commission, tax=tax, by_symbol=tuple(by_symbol))


def build_summary(title: str, dates: np.ndarray, equity: np.ndarray, rows: list[SeriesRow],
                  row_equities: list[np.ndarray], trades: TradeStats, notes: Iterable[str] = ()) -> RunSummary:
    """`rows[0]` is the strategy (its equity `equity` on `dates`); `row_equities[i]` is row i's
    equity (or level) series on the same dates, for the per-year view."""
    dates = np.asarray(dates, dtype="datetime64[D]")
    month_years, month_table = monthly_returns(dates, equity)
    per_row = []
    for eq in row_equities:
        ys, table = monthly_returns(dates, eq)
        per_row.append(dict(zip(ys, yearly_from_monthly(ys, table))))
    years = tuple((y, tuple(r.get(y) for r in per_row)) for y in month_years)
    month_rows = tuple(tuple(None if not np.isfinite(v) else float(v) for v in row) for row in month_table)
    return RunSummary(title=title, start=str(dates[1]), end=str(dates[-1]), opening_close=str(dates[0]),
                      starting_cash=float(equity[0]),
                      final_equity=float(equity[-1]), rows=tuple(rows), years=years,
                      month_years=tuple(month_years), month_table=month_rows, trades=trades, notes=tuple(notes))


# --- formatting -------------------------------------------------------------------------------
def pct(value: float | None, signed: bool = True) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value * 100:+.2f}%" if signed else f"{value * 100:.2f}%"


def krw(value: float | None, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    text = f"₩{abs(value):,.0f}"
    return ("-" if value < 0 else "+" if signed and value > 0 else "") + text


def number(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _width(text: str) -> int:
    """Terminal columns: Hangul and other wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int, right: bool = False) -> str:
    gap = " " * max(width - _width(text), 0)
    return gap + text if right else text + gap


def table(header: list[str], body: list[list[str]], indent: str = "  ", text_columns: int = 1) -> list[str]:
    """Column-aligned lines: the first `text_columns` left-aligned, the numbers right-aligned."""
    widths = [max(_width(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells):
        return indent + "  ".join(_pad(c, w, right=i >= text_columns)
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(header), indent + "  ".join("─" * w for w in widths), *(line(r) for r in body)]


def _fmt(value: float | None, kind: str) -> str:
    """kind: pct (a signed return), share (an unsigned fraction), num (a ratio)."""
    return number(value) if kind == "num" else pct(value, signed=kind == "pct")


def render(s: RunSummary, top: int = 5) -> str:
    out = [f"{s.title}   {s.start} → {s.end}   (the account opens at the close of {s.opening_close})", ""]
    out += table(["", *(c[1] for c in COMPARISON_COLUMNS)],
                 [[r.label, *(_fmt(r.metrics.get(k), kind) for k, _, kind in COMPARISON_COLUMNS)] for r in s.rows])
    out.append("")
    out.append(f"  equity {krw(s.starting_cash)} → {krw(s.final_equity)} "
               f"({krw(s.final_equity - s.starting_cash, signed=True)})")
    t = s.trades
    costs = t.commission + t.tax
    out.append(f"  costs {krw(costs)} (commission {krw(t.commission)}, sell tax {krw(t.tax)}; "
               f"{pct(costs / s.starting_cash, signed=False)} of starting cash)")
    hold = "–" if t.avg_holding_days is None else f"{t.avg_holding_days:.1f} trading days"
    out.append(f"  round trips {t.round_trips:,}, win rate {pct(t.win_rate, signed=False)}, "
               f"average holding {hold}")
    out += ["", "  per year"]
    out += table(["year", *(r.label for r in s.rows)],
                 [[str(y), *(pct(v) for v in vals)] for y, vals in s.years], indent="  ")
    # months the run never covers (a short demo) are left out rather than shown as dashes
    shown = [m for m in range(12) if any(row[m] is not None for row in s.month_table)]
    out += ["", f"  per month ({s.rows[0].label})"]
    out += table(["year", *(MONTHS[m] for m in shown)],
                 [[str(y), *(pct(row[m]) for m in shown)] for y, row in zip(s.month_years, s.month_table)])
    if t.by_symbol:
        best = list(t.by_symbol[:top])
        worst = [x for x in reversed(t.by_symbol[-top:]) if x not in best]
        out += ["", "  P&L by symbol (net of costs)"]
        out += table(["", "symbol", "name", "P&L"],
                     [[tag, x.symbol, x.name, krw(x.pnl, signed=True)]
                      for tag, group in (("top", best), ("bottom", worst)) for x in group], text_columns=3)
    for note in s.notes:
        out.append(f"  note: {note}")
    return "\n".join(out)


def day_of(value: Any) -> dt.date:
    """A fill's trading day from an engine date or a journal timestamp (ISO, exchange time)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def benchmark_rows(panel, paths, start: dt.date, end: dt.date, config,
                   dates: np.ndarray) -> tuple[list[SeriesRow], list[np.ndarray], list[str]]:
    """KOSPI200 (the index, scaled to the starting cash) and the equal-weight basket of the
    run's own symbols rebalanced monthly, through the same engine and costs on `dates` (the
    strategy's account days). A benchmark that cannot cover the span is left out with a note."""
    from dataclasses import replace

    from backtest.baselines import index_buy_hold
    from backtest.engine import run_backtest
    from strategies.baselines import EqualWeightRebalanced

    config = replace(config, progress=False)
    rows, equities, notes = [], [], []
    dates = np.asarray(dates, dtype="datetime64[D]")
    runs = (("KOSPI200", lambda: index_buy_hold(panel, paths, start, end, config)),
            ("equal-weight", lambda: run_backtest(EqualWeightRebalanced(), panel, start, end, config,
                                                  name="equal-weight")))
    for label, run in runs:
        try:
            res = run()
        except (ValueError, KeyError) as exc:
            notes.append(f"{label} left out: {exc}")
            continue
        if len(res.dates) != len(dates) or np.any(res.dates != dates):
            notes.append(f"{label} left out: its days {res.dates[0]}..{res.dates[-1]} differ from the run's")
            continue
        rows.append(SeriesRow(label, res.metrics()))
        equities.append(res.equity)
    return rows, equities, notes
