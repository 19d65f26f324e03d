"""LightGBM forecaster: predicts the cross-sectional rank of the forward return, holds the top k.

Label (row t): the percentile rank across symbols of close[t+1+h] / close[t+1] - 1, the h-bar
return from the first close after a decision at t's close could have been filled (Qlib's
Ref($close, -h-1) / Ref($close, -1) - 1). A training row t is used only when its whole label window
lies inside the history it is fitted on (t + 1 + h <= last row): `label_rows` purges the rest.

`fit(history)` (the Agent protocol: it learns from `history` only):
  1. rows every `sample_every` bars from `train_start`, with a purged label;
  2. hyper-parameters: each `grid` candidate is trained on rows whose label window ends before
     the validation span starts (purge of h + 1 bars), and scored by the mean daily Rank IC on the
     last `validation_bars` label rows of the history; the best is kept (never a test year);
  3. the chosen candidate is refitted on every purged row of the history.
A continuous run (`trader backtest --strategy lgbm`) refits the same way every `refit_every` bars
on the window it is given (data <= the decision bar), so it refits yearly walk-forward too.

Scores become weights in `top_k_equal_weights`, a separate function of the scores, so another
portfolio construction (TopkDropout) can take its place. Deterministic per seed: LightGBM's
`seed`, `deterministic=True`, `num_threads=1`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from market.data import Panel
from strategies.features import FeatureBuilder

# small on purpose: each candidate is one more training per fit, and the report fits
# 2 models x 7 years x 5 seeds on 2 shared CPU cores
DEFAULT_GRID: tuple[dict[str, Any], ...] = (
    {"num_leaves": 7, "n_estimators": 200, "learning_rate": 0.05},
    {"num_leaves": 31, "n_estimators": 200, "learning_rate": 0.05},
    {"num_leaves": 31, "n_estimators": 200, "learning_rate": 0.02},
)
BASE_PARAMS: dict[str, Any] = {
    "objective": "regression", "min_data_in_leaf": 200, "bagging_fraction": 0.8, "bagging_freq": 1,
    "feature_fraction": 0.8, "lambda_l2": 1.0, "verbose": -1, "deterministic": True,
    "force_row_wise": True, "num_threads": 1, "min_data_in_bin": 3,
}


def forward_returns(close: np.ndarray, horizon: int) -> np.ndarray:
    """(T, N) return from close[t+1] to close[t+1+horizon]; NaN where that window leaves the data."""
    T = len(close)
    out = np.full(close.shape, np.nan)
    if T > horizon + 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            out[: T - horizon - 1] = close[horizon + 1:] / close[1: T - horizon] - 1.0
    out[~np.isfinite(out)] = np.nan
    return out


def rank_labels(fwd: np.ndarray) -> np.ndarray:
    """Cross-sectional percentile rank of each row's forward returns (NaN stays NaN)."""
    out = np.full(fwd.shape, np.nan)
    for t in range(len(fwd)):
        ok = np.isfinite(fwd[t])
        k = int(ok.sum())
        if k >= 2:
            order = np.argsort(np.argsort(fwd[t, ok], kind="stable"), kind="stable")
            out[t, ok] = (order + 1.0) / k
    return out


def label_rows(n_rows: int, horizon: int, first: int, every: int) -> np.ndarray:
    """Training rows of an n_rows history whose label window [t+1, t+1+horizon] ends inside it."""
    last = n_rows - 2 - horizon
    if last < first:
        return np.zeros(0, dtype=np.int64)
    # anchored at the last usable row, so a longer history keeps the newest rows
    return np.arange(last, first - 1, -every, dtype=np.int64)[::-1]


def purged_split(rows: np.ndarray, horizon: int, validation_bars: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of a history's label rows `rows`: validation = every bar of
    the last `validation_bars` label rows; training = the rows whose label window [t+1, t+1+h]
    ends before the first validation row (purge), so no training label overlaps a validation one."""
    if len(rows) == 0:
        return rows, rows
    last_label = int(rows[-1])
    val_start = max(last_label - validation_bars + 1, int(rows[0]))
    val_rows = np.arange(val_start, last_label + 1, dtype=np.int64)
    return rows[rows + 1 + horizon < val_start], val_rows


def daily_ic(scores: np.ndarray, fwd: np.ndarray, min_count: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Per row: Pearson IC and Spearman Rank IC between scores and forward returns (NaN if too few)."""
    ic, ric = np.full(len(scores), np.nan), np.full(len(scores), np.nan)
    for t in range(len(scores)):
        ok = np.isfinite(scores[t]) & np.isfinite(fwd[t])
        if ok.sum() < min_count:
            continue
        a, b = scores[t, ok], fwd[t, ok]
        if np.std(a) > 0 and np.std(b) > 0:
            ic[t] = float(np.corrcoef(a, b)[0, 1])
            ra = np.argsort(np.argsort(a)).astype(float)
            rb = np.argsort(np.argsort(b)).astype(float)
            ric[t] = float(np.corrcoef(ra, rb)[0, 1])
    return ic, ric


def top_k_equal_weights(scores: np.ndarray, k: int) -> np.ndarray:
    """Equal weights 1/k on the k highest finite scores (fewer if fewer are finite), 0 elsewhere."""
    s = np.asarray(scores, dtype=float)
    w = np.zeros(len(s))
    ok = np.flatnonzero(np.isfinite(s))
    if len(ok) == 0 or k <= 0:
        return w
    # ties broken by symbol order (stable), so the choice is deterministic
    best = ok[np.argsort(-s[ok], kind="stable")[:k]]
    w[best] = 1.0 / len(best)
    return w


@dataclass
class LGBMForecaster:
    features: FeatureBuilder
    horizon: int = 20
    top_k: int = 10
    rebalance: str = "monthly"
    seed: int = 0
    grid: tuple[dict[str, Any], ...] = DEFAULT_GRID
    validation_bars: int = 246
    sample_every: int = 5
    min_train_rows: int = 150   # label dates; fewer: no validation split, the first candidate is used
    # refit on the decision window once this many bars passed since the last fit (a continuous
    # run: yearly walk-forward); None: one fit per agent (walk_forward builds one per test year)
    refit_every: int | None = None
    name: str = "lgbm"
    chosen: dict[str, Any] | None = field(default=None, repr=False)
    validation_rank_ic: dict[int, float] = field(default_factory=dict, repr=False)
    _model: Any = field(default=None, repr=False)
    _fitted_on: tuple | None = field(default=None, repr=False)  # (n rows, last date, panel key)

    @property
    def lookback(self) -> int:
        return self.features.lookback

    # --- training -------------------------------------------------------------------------
    def _inputs(self, history: Panel, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X (R, N, F), rank label (R, N), forward return (R, N)) at `rows` of `history`; the
        label uses history rows only (`forward_returns` on history.close: NaN past its end)."""
        fwd = forward_returns(history.close, self.horizon)[rows]
        return self.features.matrix(history, rows), rank_labels(fwd), fwd

    @staticmethod
    def _flat(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat_x, flat_y = X.reshape(-1, X.shape[-1]), y.reshape(-1)
        keep = np.isfinite(flat_y) & np.isfinite(flat_x).any(axis=1)
        return flat_x[keep], flat_y[keep]

    def _train(self, params: dict[str, Any], X: np.ndarray, y: np.ndarray):
        import lightgbm as lgb

        rounds = int(params["n_estimators"])
        booster_params = {**BASE_PARAMS, **{k: v for k, v in params.items() if k != "n_estimators"},
                          "seed": self.seed}
        return lgb.train(booster_params, lgb.Dataset(X, y, free_raw_data=True), num_boost_round=rounds)

    def fit(self, history: Panel) -> None:
        from strategies.features import panel_key

        key = (len(history), str(history.dates[-1]) if len(history) else "", panel_key(history))
        if self._fitted_on == key:
            return  # same history again (a host that fits twice): the same model
        first = self.lookback
        rows = label_rows(len(history), self.horizon, first, self.sample_every)
        if len(rows) == 0:
            raise ValueError(f"{self.name}: {len(history)} bars of history leave no labelled training row "
                             f"(need > {first + self.horizon + 2})")
        pre_val, val_rows = purged_split(rows, self.horizon, self.validation_bars)
        select = len(self.grid) > 1 and len(pre_val) >= self.min_train_rows and len(val_rows) >= 20
        need = np.union1d(rows, val_rows) if select else rows
        X, y, fwd = self._inputs(history, need)
        at = {int(t): i for i, t in enumerate(need)}
        self.validation_rank_ic = {}
        chosen = dict(self.grid[0])
        if select:
            tr = np.array([at[int(t)] for t in pre_val])
            va = np.array([at[int(t)] for t in val_rows])
            Xt, yt = self._flat(X[tr], y[tr])
            best_ic = -np.inf
            for i, params in enumerate(self.grid):
                _, ric = daily_ic(self._predict(self._train(params, Xt, yt), X[va]), fwd[va])
                mean = float(np.nanmean(ric)) if np.isfinite(ric).any() else -np.inf
                self.validation_rank_ic[i] = mean
                if mean > best_ic:
                    chosen, best_ic = dict(params), mean
        ra = np.array([at[int(t)] for t in rows])
        self._model = self._train(chosen, *self._flat(X[ra], y[ra]))
        self.chosen = chosen
        self._fitted_on = key

    @staticmethod
    def _predict(model, X: np.ndarray) -> np.ndarray:
        """(R, N) scores for (R, N, F) inputs; NaN for symbols without any feature (no bar)."""
        flat = X.reshape(-1, X.shape[-1])
        ok = np.isfinite(flat).any(axis=1)
        out = np.full(len(flat), np.nan)
        if ok.any():
            out[ok] = model.predict(flat[ok])
        return out.reshape(X.shape[:2])

    # --- deciding -------------------------------------------------------------------------
    def scores(self, window: Panel, rows: np.ndarray | None = None) -> np.ndarray:
        """(R, N) model scores at `rows` of `window` (default: its last row)."""
        if self._model is None:
            raise ValueError(f"{self.name}: not fitted; call fit(history) before deciding")
        rows = np.array([len(window) - 1]) if rows is None else np.asarray(rows)
        return self._predict(self._model, self.features.matrix(window, rows))

    def target_weights(self, window: Panel) -> np.ndarray:
        if len(window) == 0:
            return np.zeros(len(window.symbols))
        if self._fitted_on is not None and self.refit_every and \
                len(window) - self._fitted_on[0] >= self.refit_every:
            self.fit(window)  # yearly walk-forward refit on data up to this decision only
        if self._model is None:
            raise ValueError(f"{self.name}: not fitted; call fit(history) before deciding")
        s = self._predict(self._model, self.features.latest(window))[0]
        s = np.where(np.isfinite(window.close[-1]) & (window.close[-1] > 0), s, np.nan)
        return top_k_equal_weights(s, self.top_k)
