"""Walk-forward evaluation: fit on the past, score on the next span, stitch the test spans.

Windows are index ranges on a trading calendar. Each has a train span, an optional validation
span and a test span, separated by a purge/embargo gap of `gap` bars, so nothing a model was
fitted or selected on lies within `gap` bars of what it is scored on (labels that look ahead a
few bars cannot leak across). Rolling windows keep the train length fixed; expanding windows
grow it from the first bar. Test spans follow each other without overlap, so the stitched
curve is out of sample everywhere.

`evaluate(agent, panel, start, end, costs)` is the one-call scorer (the RL trainer scores a
policy on a validation window with it): fit on data before `start` only, trade `start..end`,
return the metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from backtest.engine import BacktestConfig, BacktestResult, run_backtest
from market.accounting import CostModel
from market.data import Panel


@dataclass(frozen=True)
class Window:
    """Half-open index ranges [start, stop) on the panel's rows."""

    train: tuple[int, int]
    validation: tuple[int, int] | None
    test: tuple[int, int]

    def spans(self, dates: np.ndarray) -> dict[str, tuple[str, str] | None]:
        def span(r):
            return None if r is None else (str(dates[r[0]]), str(dates[r[1] - 1]))
        return {"train": span(self.train), "validation": span(self.validation), "test": span(self.test)}


def walk_forward_windows(n_bars: int, train: int, test: int, validation: int = 0, gap: int = 5,
                         step: int | None = None, expanding: bool = False, first_test: int | None = None
                         ) -> list[Window]:
    """Windows over `n_bars` rows: [train][gap][validation][gap][test], advancing by `step`
    (default `test`, so test spans tile without overlap). `first_test` fixes where the first
    test span starts (default: as early as the train span allows)."""
    if min(train, test) < 1 or validation < 0 or gap < 0:
        raise ValueError(f"need train >= 1, test >= 1, validation >= 0, gap >= 0; got "
                         f"{train}, {test}, {validation}, {gap}")
    step = test if step is None else step
    if step < test:
        raise ValueError(f"step {step} < test {test} would overlap test spans (stitching needs disjoint ones)")
    head = train + gap + (validation + gap if validation else 0)
    t_start = head if first_test is None else first_test
    if t_start < head:
        raise ValueError(f"first test bar {t_start} leaves less than train+gaps ({head}) bars before it")
    out = []
    while t_start + 1 <= n_bars:
        t_stop = min(t_start + test, n_bars)
        if validation:
            v_stop = t_start - gap
            v_start = v_stop - validation
            tr_stop = v_start - gap
            val = (v_start, v_stop)
        else:
            tr_stop = t_start - gap
            val = None
        tr_start = 0 if expanding else tr_stop - train
        out.append(Window(train=(tr_start, tr_stop), validation=val, test=(t_start, t_stop)))
        t_start += step
    if not out:
        raise ValueError(f"{n_bars} bars cannot hold one window of train {train} + gaps + test {test}")
    return out


def evaluate(agent: Any, panel: Panel, start, end, costs: CostModel | None = None, *,
             config: BacktestConfig | None = None, benchmark: np.ndarray | None = None,
             fit: bool = True) -> dict[str, float]:
    """Score `agent` on `start..end`: fitted on panel rows before `start` (if `fit`), traded
    under the one accounting, metrics returned. `benchmark`: levels aligned with `panel.dates`
    (e.g. `market.data.index_close(panel.dates, kospi200)`) adds IR, tracking error and beta."""
    result = backtest_span(agent, panel, start, end, costs=costs, config=config, fit=fit)
    return result.metrics(None if benchmark is None else align_benchmark(result, panel, benchmark))


def backtest_span(agent: Any, panel: Panel, start, end, costs: CostModel | None = None,
                  config: BacktestConfig | None = None, fit: bool = True) -> BacktestResult:
    config = config or BacktestConfig()
    if costs is not None:  # every other setting (sell_tax, the band, ...) is kept as given
        config = replace(config, costs=costs)
    return run_backtest(agent, panel, start, end, config, fit=fit)


def align_benchmark(result: BacktestResult, panel: Panel, benchmark: np.ndarray) -> np.ndarray:
    b = np.asarray(benchmark, dtype=float)
    if b.shape != (len(panel),):
        raise ValueError(f"benchmark must have one level per panel date ({len(panel)}), got {b.shape}")
    lo = int(np.searchsorted(panel.dates, result.dates[0]))
    return b[lo:lo + len(result.dates)]


@dataclass
class WalkForwardResult:
    windows: list[Window]
    runs: dict[int, BacktestResult]          # seed -> stitched out-of-sample result
    metrics: dict[int, dict[str, float]]     # seed -> metrics of the stitched run
    window_metrics: dict[int, list[dict]] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and standard deviation of each metric across seeds."""
        keys = sorted(set.intersection(*(set(m) for m in self.metrics.values())))
        out = {}
        for k in keys:
            vals = np.array([float(m[k]) for m in self.metrics.values()])
            out[k] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}
        return out


def walk_forward(factory: Callable[[int], Any], panel: Panel, windows: Sequence[Window],
                 seeds: Sequence[int] = (0,), config: BacktestConfig = BacktestConfig(),
                 benchmark: np.ndarray | None = None,
                 select: Callable[[Any, Panel, Window], Any] | None = None) -> WalkForwardResult:
    """Run a fresh strategy per window and seed: `factory(seed)` builds it, `fit` sees the
    window's train rows only, `select(agent, panel, window)` (optional) may use the validation
    span to choose among candidates and returns the agent to test. The account (cash and
    holdings) carries from one test span into the next, so the stitched curve is one
    continuous out-of-sample run with every rebalancing cost paid."""
    check_windows(windows)
    runs, mets, per_window = {}, {}, {}
    for seed in seeds:
        parts: list[BacktestResult] = []
        cash, holdings = config.cash, None
        wm = []
        for w in windows:
            agent = factory(seed)
            if hasattr(agent, "fit"):
                agent.fit(panel.rows(*w.train))
            if select is not None:
                agent = select(agent, panel, w)
            # the test span trades from its first bar: the decision at the close of the bar
            # before (inside the gap) uses rows up to that bar only
            res = run_backtest(agent, panel, panel.date(w.test[0]), panel.date(w.test[1] - 1), config,
                               fit=False, initial_cash=cash, initial_holdings=holdings)
            parts.append(res)
            wm.append({**w.spans(panel.dates), **res.metrics()})
            cash, holdings = int(res.cash[-1]), res.holdings[-1]
        stitched = stitch(parts)
        runs[seed] = stitched
        bench = None if benchmark is None else align_benchmark(stitched, panel, benchmark)
        mets[seed] = stitched.metrics(bench)
        per_window[seed] = wm
    return WalkForwardResult(windows=list(windows), runs=runs, metrics=mets, window_metrics=per_window)


def check_windows(windows: Sequence[Window], contiguous: bool = True) -> None:
    """Refuse windows whose train/validation reach into their test span, whose test spans
    overlap or (with `contiguous`, needed to stitch one continuous account) leave gaps."""
    prev_stop = None
    for i, w in enumerate(windows):
        fit_end = max(w.train[1], w.validation[1] if w.validation else 0)
        if fit_end > w.test[0] or (w.validation and w.train[1] > w.validation[0]):
            raise ValueError(f"window {i}: training/validation rows reach into a later span")
        if prev_stop is not None and w.test[0] < prev_stop:
            raise ValueError(f"window {i}: test span overlaps the previous window's test span")
        if contiguous and prev_stop is not None and w.test[0] != prev_stop:
            raise ValueError(f"window {i}: test span does not start where the previous one ended "
                             f"(step must equal test to stitch one continuous account)")
        prev_stop = w.test[1]


def stitch(parts: Sequence[BacktestResult]) -> BacktestResult:
    """Join consecutive results whose accounts continue one another into one result. Each
    part's row 0 is the account carried in from the previous part, so it is dropped."""
    import polars as pl

    first = parts[0]
    keep = [first] + list(parts[1:])
    for prev, nxt in zip(parts, parts[1:]):
        if nxt.dates[0] != prev.dates[-1] or nxt.cash[0] != prev.cash[-1] or \
                not np.array_equal(nxt.holdings[0], prev.holdings[-1]):
            raise ValueError(f"cannot stitch: the part starting {nxt.dates[0]} does not continue the account "
                             f"of the part ending {prev.dates[-1]}")

    def cat(attr, drop_first):
        arrays = [getattr(p, attr) if i == 0 or not drop_first else getattr(p, attr)[1:]
                  for i, p in enumerate(keep)]
        return np.concatenate(arrays)

    # a later part's row 0 is the previous part's last day (contiguous test spans)
    return BacktestResult(
        dates=cat("dates", True), symbols=first.symbols, equity=cat("equity", True), cash=cat("cash", True),
        holdings=cat("holdings", True), prices=cat("prices", True), targets=cat("targets", True),
        commission=cat("commission", True), tax=cat("tax", True), traded_value=cat("traded_value", True),
        fills=pl.concat([p.fills for p in parts]), strategy=first.strategy,
        orders=None if any(p.orders is None for p in parts) else pl.concat([p.orders for p in parts
                                                                             if p.orders is not None]))


