"""Rank forecasters: predict the cross-sectional rank of the forward return, hold the top k.

`RankForecaster` is the one home of what every model family shares (label, purge, validation
choice, refit, decision); `LGBMForecaster` here and the PyTorch sequence models in
strategies/neural.py (`gru`, `transformer`) supply only their inputs, training and prediction.

Label (row t): the percentile rank across symbols of close[t+1+h] / close[t+1] - 1, the h-bar
return from the first close after a decision at t's close could have been filled (Qlib's
Ref($close, -h-1) / Ref($close, -1) - 1). A training row t is used only when its whole label window
lies inside the history it is fitted on (t + 1 + h <= last row): `label_rows` purges the rest.

`fit(history)` (the Agent protocol: it learns from `history` only):
  1. rows every `sample_every` bars from the first row with a full lookback, with a purged label;
  2. hyper-parameters: each `grid` candidate is trained on rows whose label window ends before
     the validation span starts (purge of h + 1 bars), and scored by the mean daily Rank IC on the
     last `validation_bars` label rows of the history; the best is kept (never a test year);
  3. the chosen candidate (with what its validation run chose, e.g. a net's epoch count) is
     refitted on every purged row of the history.
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
class RankForecaster:
    """What every forecaster shares: the purged rank label, the validation choice, the refit and
    the top-k decision. A model family supplies `_inputs` (its view of the features at chosen
    rows), `_train` and `_predict`; `fit` and `target_weights` are the same for all of them.

    `_train(params, X, y, validation)` returns (model, params it used): with `validation` =
    (X, forward returns) of the purged validation rows it may stop early on them and say where
    in the params it returns (a neural net's epoch count), so the refit on every row repeats that
    choice without a validation split.
    """

    features: FeatureBuilder
    horizon: int = 20
    top_k: int = 10
    rebalance: str = "monthly"
    seed: int = 0
    grid: tuple[dict[str, Any], ...] = ()
    validation_bars: int = 246
    sample_every: int = 5
    min_train_rows: int = 150   # label dates; fewer: no validation split, the first candidate is used
    # refit on the decision window once this many bars passed since the last fit (a continuous
    # run: yearly walk-forward); None: one fit per agent (walk_forward builds one per test year)
    refit_every: int | None = None
    name: str = "forecaster"
    chosen: dict[str, Any] | None = field(default=None, repr=False)
    validation_rank_ic: dict[int, float] = field(default_factory=dict, repr=False)
    _model: Any = field(default=None, repr=False)
    _fitted_on: tuple | None = field(default=None, repr=False)  # (n rows, last date, panel key)

    @property
    def lookback(self) -> int:
        return self.features.lookback

    # --- what a model family supplies -----------------------------------------------------
    def _features_at(self, panel: Panel, rows: np.ndarray) -> Any:
        """The model's inputs at `rows` of `panel`, indexable by a row subset (X[idx])."""
        raise NotImplementedError

    def _latest_features(self, window: Panel) -> Any:
        """`_features_at(window, [last row])`, computed from the bars a decision needs only."""
        raise NotImplementedError

    def _train(self, params: dict[str, Any], X: Any, y: np.ndarray,
               validation: tuple[Any, np.ndarray] | None = None) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    def _predict(self, model: Any, X: Any) -> np.ndarray:
        """(R, N) scores; NaN for symbols without features (no bar)."""
        raise NotImplementedError

    def _needs_validation(self) -> bool:
        """Whether a fit needs the validation split even with one candidate (early stopping)."""
        return len(self.grid) > 1

    def _label_rows(self, rows: np.ndarray) -> np.ndarray:
        """The sampled label rows a fit trains and validates on (all of them; a model may keep
        only the newest, a rolling training window)."""
        return rows

    # --- training -------------------------------------------------------------------------
    def _inputs(self, history: Panel, rows: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        """(X at rows, rank label (R, N), forward return (R, N)) at `rows` of `history`; the
        label uses history rows only (`forward_returns` on history.close: NaN past its end)."""
        fwd = forward_returns(history.close, self.horizon)[rows]
        return self._features_at(history, rows), rank_labels(fwd), fwd

    def _prepared(self, history: Panel, validate: bool) -> dict[str, Any]:
        """The purged rows of `history` a fit uses and their inputs: `X, y, fwd` at the needed
        rows, and index arrays into them: `train` (every purged label row, the refit) and, when
        `select` (a validation split is possible and wanted), `pre_val` / `val` (the split)."""
        first = self.lookback
        rows = self._label_rows(label_rows(len(history), self.horizon, first, self.sample_every))
        if len(rows) == 0:
            raise ValueError(f"{self.name}: {len(history)} bars of history leave no labelled training row "
                             f"(need > {first + self.horizon + 2})")
        pre_val, val_rows = purged_split(rows, self.horizon, self.validation_bars)
        select = validate and len(pre_val) >= self.min_train_rows and len(val_rows) >= 20
        need = np.union1d(rows, val_rows) if select else rows
        X, y, fwd = self._inputs(history, need)
        at = {int(t): i for i, t in enumerate(need)}
        out: dict[str, Any] = {"X": X, "y": y, "fwd": fwd, "select": select,
                               "train": np.array([at[int(t)] for t in rows])}
        if select:
            out["pre_val"] = np.array([at[int(t)] for t in pre_val])
            out["val"] = np.array([at[int(t)] for t in val_rows])
        return out

    def _validation_score(self, params: dict[str, Any], p: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        """(mean daily Rank IC on the validation rows, params the training used) of a model with
        `params` trained on the purged rows before the validation span."""
        X, y, fwd, tr, va = p["X"], p["y"], p["fwd"], p["pre_val"], p["val"]
        model, used = self._train(params, X[tr], y[tr], (X[va], fwd[va]))
        _, ric = daily_ic(self._predict(model, X[va]), fwd[va])
        return (float(np.nanmean(ric)) if np.isfinite(ric).any() else -np.inf), used

    def validation_rank_ic_of(self, history: Panel, params: dict[str, Any]) -> float:
        """What `fit` scores a grid candidate by, for any `params`: the mean daily Rank IC on the
        last `validation_bars` label rows of `history` of a model trained on the rows whose label
        ends before them (purged). A hyper-parameter search (training/forecast_search.py) calls it
        per trial. ValueError when the history is too short for a validation split."""
        p = self._prepared(history, validate=True)
        if not p["select"]:
            raise ValueError(f"{self.name}: {len(history)} bars of history are too few for a purged validation "
                             f"split ({self.min_train_rows} training label rows before {self.validation_bars} "
                             "validation bars)")
        return self._validation_score(params, p)[0]

    def fit(self, history: Panel) -> None:
        from strategies.features import panel_key

        key = (len(history), str(history.dates[-1]) if len(history) else "", panel_key(history))
        if self._fitted_on == key:
            return  # same history again (a host that fits twice): the same model
        if not self.grid:
            raise ValueError(f"{self.name}: an empty hyper-parameter grid")
        p = self._prepared(history, self._needs_validation())
        self.validation_rank_ic = {}
        chosen = dict(self.grid[0])
        if p["select"]:
            best_ic = -np.inf
            for i, params in enumerate(self.grid):
                mean, used = self._validation_score(params, p)
                self.validation_rank_ic[i] = mean
                if mean > best_ic:
                    chosen, best_ic = dict(used), mean
        ra = p["train"]
        self._model, self.chosen = self._train(chosen, p["X"][ra], p["y"][ra])
        self._fitted_on = key

    @property
    def fitted_model(self) -> Any:
        """The model `fit` trained (None before): what a registry stores."""
        return self._model

    def use_fitted(self, model: Any, chosen: dict[str, Any]) -> None:
        """Decide with `model`, fitted elsewhere with `chosen` (a registered model), instead of
        fitting here; the caller makes sure it saw no data after the decisions it will make."""
        self._model, self.chosen = model, dict(chosen)

    # --- deciding -------------------------------------------------------------------------
    def scores(self, window: Panel, rows: np.ndarray | None = None) -> np.ndarray:
        """(R, N) model scores at `rows` of `window` (default: its last row)."""
        if self._model is None:
            raise ValueError(f"{self.name}: not fitted; call fit(history) before deciding")
        rows = np.array([len(window) - 1]) if rows is None else np.asarray(rows)
        return self._predict(self._model, self._features_at(window, rows))

    def target_weights(self, window: Panel) -> np.ndarray:
        if len(window) == 0:
            return np.zeros(len(window.symbols))
        if self._fitted_on is not None and self.refit_every and \
                len(window) - self._fitted_on[0] >= self.refit_every:
            self.fit(window)  # yearly walk-forward refit on data up to this decision only
        if self._model is None:
            raise ValueError(f"{self.name}: not fitted; call fit(history) before deciding")
        s = self._predict(self._model, self._latest_features(window))[0]
        s = np.where(np.isfinite(window.close[-1]) & (window.close[-1] > 0), s, np.nan)
        return top_k_equal_weights(s, self.top_k)


@dataclass
class LGBMForecaster(RankForecaster):
    """LightGBM on the (N, F) feature cross-section of the decision row, one tree model for all
    symbols and dates (rows flattened); the grid candidates differ in leaves and learning rate."""

    grid: tuple[dict[str, Any], ...] = DEFAULT_GRID
    name: str = "lgbm"

    def _features_at(self, panel: Panel, rows: np.ndarray) -> np.ndarray:
        return self.features.matrix(panel, rows)

    def _latest_features(self, window: Panel) -> np.ndarray:
        return self.features.latest(window)

    @staticmethod
    def _flat(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat_x, flat_y = X.reshape(-1, X.shape[-1]), y.reshape(-1)
        keep = np.isfinite(flat_y) & np.isfinite(flat_x).any(axis=1)
        return flat_x[keep], flat_y[keep]

    def _train(self, params: dict[str, Any], X: np.ndarray, y: np.ndarray,
               validation: tuple[Any, np.ndarray] | None = None) -> tuple[Any, dict[str, Any]]:
        import lightgbm as lgb

        # a fixed number of rounds per candidate: the validation span only ranks the candidates
        flat_x, flat_y = self._flat(X, y)
        rounds = int(params["n_estimators"])
        booster_params = {**BASE_PARAMS, **{k: v for k, v in params.items() if k != "n_estimators"},
                          "seed": self.seed}
        model = lgb.train(booster_params, lgb.Dataset(flat_x, flat_y, free_raw_data=True), num_boost_round=rounds)
        return model, dict(params)

    def _predict(self, model: Any, X: np.ndarray) -> np.ndarray:
        """(R, N) scores for (R, N, F) inputs; NaN for symbols without any feature (no bar)."""
        flat = X.reshape(-1, X.shape[-1])
        ok = np.isfinite(flat).any(axis=1)
        out = np.full(len(flat), np.nan)
        if ok.any():
            out[ok] = model.predict(flat[ok])
        return out.reshape(X.shape[:2])
