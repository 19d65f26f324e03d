"""Market regimes (bull / bear / sideways) from a Gaussian HMM, forward-filtered, walk-forward.

Features (per day, from index closes up to that day only): the daily log return and the log of
the `vol_window`-day realised volatility. The HMM (hmmlearn `GaussianHMM`) is refitted every
`refit_every` rows on the last `train_window` rows; the refit rows are counted from the start of
the series, so appending data never moves a past refit. Each fitted model is used from its refit
row until the next refit.

Why our own forward pass: hmmlearn's `predict`/`predict_proba` run forward-backward (smoothing)
over the whole sequence they are given, so p(state at t) would depend on data after t. We take the
fitted parameters (start probabilities, transition matrix, Gaussian means/covariances) and compute
the *filtered* probabilities p(s_t | x_1..x_t) with the forward recursion in log space.

Labels: after every fit the states are named by their statistics: highest mean return = bull,
lowest = bear, the rest = sideways. Refits warm-start from the previous model's parameters, so a
state keeps its identity, and naming by statistics keeps the labels stable even if it does not.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

REGIMES: tuple[str, ...] = ("bull", "bear", "sideways")


def index_features(close: np.ndarray, vol_window: int = 20) -> np.ndarray:
    """(T, 2): [daily log return, log realised vol over vol_window returns]; NaN rows at the start."""
    close = np.asarray(close, dtype=float)
    if close.ndim != 1:
        raise ValueError(f"index closes must be 1-D, got shape {close.shape}")
    if np.any(close[np.isfinite(close)] <= 0):
        raise ValueError("index closes must be positive")
    r = np.full(len(close), np.nan)
    r[1:] = np.diff(np.log(close))
    vol = np.full(len(close), np.nan)
    for t in range(vol_window, len(close)):
        w = r[t - vol_window + 1:t + 1]
        if np.all(np.isfinite(w)):
            vol[t] = np.std(w) * np.sqrt(252)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.column_stack([r, np.log(np.where(vol > 0, vol, np.nan))])


def _log_gauss(x: np.ndarray, means: np.ndarray, covars: np.ndarray) -> np.ndarray:
    """log N(x_t | mean_k, cov_k) for every row t and state k: (T, K)."""
    t, d = x.shape
    out = np.empty((t, len(means)))
    for k, (mu, cov) in enumerate(zip(means, covars)):
        chol = np.linalg.cholesky(cov)
        z = np.linalg.solve(chol, (x - mu).T)
        out[:, k] = -0.5 * np.sum(z * z, axis=0) - np.sum(np.log(np.diag(chol))) - 0.5 * d * np.log(2 * np.pi)
    return out


def forward_filter(x: np.ndarray, startprob: np.ndarray, transmat: np.ndarray, means: np.ndarray,
                   covars: np.ndarray) -> np.ndarray:
    """Filtered state probabilities p(s_t | x_1..x_t), (T, K). Row t uses rows <= t only."""
    log_b = _log_gauss(np.asarray(x, float), means, covars)
    # scaled recursion: emissions divided by their row max (a constant per row cancels in the
    # normalisation), so nothing under/overflows and each step is a tiny matrix product
    b = np.exp(log_b - log_b.max(axis=1, keepdims=True))
    a = np.asarray(transmat, float)
    out = np.empty_like(b)
    alpha = np.asarray(startprob, float) * b[0]
    alpha /= alpha.sum()
    out[0] = alpha
    for t in range(1, len(b)):
        alpha = (alpha @ a) * b[t]
        s = alpha.sum()
        alpha = alpha / s if s > 0 else np.full(len(alpha), 1.0 / len(alpha))
        out[t] = alpha
    return out


def label_states(means_return: np.ndarray, means_logvol: np.ndarray) -> list[str]:
    """Name states by their statistics: the highest-volatility state is bear (crashes and
    sell-offs are the high-vol episodes of KOSPI200), the highest mean return among the rest is
    bull, the others are sideways. Mean daily return alone is too noisy to separate states."""
    labels = ["sideways"] * len(means_return)
    bear = int(np.argmax(means_logvol))
    labels[bear] = "bear"
    rest = [k for k in range(len(means_return)) if k != bear]
    labels[max(rest, key=lambda k: means_return[k])] = "bull"
    return labels


@dataclass
class FittedRegimeModel:
    """One walk-forward fit: HMM parameters in standardised-feature space plus the scaler."""
    refit_row: int
    train_start: int
    mu: np.ndarray
    sd: np.ndarray
    startprob: np.ndarray
    transmat: np.ndarray
    means: np.ndarray
    covars: np.ndarray
    labels: list[str]

    def filter(self, x: np.ndarray) -> np.ndarray:
        """(T, 3) filtered probabilities in REGIMES order for raw feature rows x."""
        p = forward_filter((x - self.mu) / self.sd, self.startprob, self.transmat, self.means, self.covars)
        out = np.zeros((len(x), len(REGIMES)))
        for k, lab in enumerate(self.labels):
            out[:, REGIMES.index(lab)] += p[:, k]
        return out


@dataclass
class RegimeDetector:
    n_states: int = 3
    vol_window: int = 20
    train_window: int = 2520  # ~10 years of daily rows
    min_train: int = 756  # first fit needs ~3 years
    refit_every: int = 126  # ~6 months
    n_iter: int = 50
    burn_in: int = 252  # rows the forward pass runs before a model's first used row
    seed: int = 0
    _fits: dict = field(default_factory=dict, repr=False)  # (refit date, train start date) → model

    def __post_init__(self):
        if self.n_states < 2:
            raise ValueError(f"need at least 2 HMM states, got {self.n_states}")
        if self.min_train < 10 * self.n_states or self.refit_every < 1:
            raise ValueError("min_train too small or refit_every < 1")

    def _fit(self, x: np.ndarray, prev: FittedRegimeModel | None, refit_row: int, start: int) -> FittedRegimeModel:
        from hmmlearn.hmm import GaussianHMM

        mu, sd = x.mean(axis=0), x.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        z = (x - mu) / sd
        model = GaussianHMM(n_components=self.n_states, covariance_type="full", n_iter=self.n_iter,
                            random_state=self.seed, init_params="" if prev is not None else "stmc")
        if prev is not None:  # warm start: states keep their identity across refits
            model.startprob_ = prev.startprob
            model.transmat_ = prev.transmat
            # previous means/covs were in the previous scaler's units: map them into this one
            model.means_ = (prev.means * prev.sd + prev.mu - mu) / sd
            model.covars_ = prev.covars * np.outer(prev.sd, prev.sd)[None] / np.outer(sd, sd)[None]
        model.fit(z)
        means = model.means_
        labels = label_states(means[:, 0] * sd[0] + mu[0], means[:, 1] * sd[1] + mu[1])
        return FittedRegimeModel(refit_row, start, mu, sd, model.startprob_.copy(), model.transmat_.copy(),
                                 means.copy(), model.covars_.copy(), labels)

    def refit_rows(self, first_valid: int, n: int) -> list[int]:
        """Rows where a new model is fitted: counted from the series start, independent of n."""
        return list(range(first_valid + self.min_train - 1, n, self.refit_every))

    def filter(self, dates: np.ndarray, close: np.ndarray) -> np.ndarray:
        """(T, 3) forward-filtered probabilities (bull, bear, sideways); NaN before the first fit.

        Row t depends only on closes[:t+1]: the fit used for row t was made at a refit row <= t on
        rows <= that refit row, and the forward pass is causal.
        """
        dates = np.asarray(dates, dtype="datetime64[D]")
        x = index_features(close, self.vol_window)
        if len(dates) != len(x):
            raise ValueError(f"{len(dates)} dates for {len(x)} closes")
        valid = np.all(np.isfinite(x), axis=1)
        out = np.full((len(x), len(REGIMES)), np.nan)
        if not valid.any():
            return out
        first = int(np.argmax(valid))
        if not valid[first:].all():
            # gaps would silently break the recursion; hold the last good feature row instead
            x = x.copy()
            for t in range(first + 1, len(x)):
                if not valid[t]:
                    x[t] = x[t - 1]
        refits = self.refit_rows(first, len(x))
        prev = None
        for i, r in enumerate(refits):
            start = max(first, r - self.train_window + 1)
            key = (dates[r], dates[start])
            model = self._fits.get(key)
            if model is None:
                model = self._fit(x[start:r + 1], prev, r, start)
                self._fits[key] = model
            prev = model
            end = refits[i + 1] if i + 1 < len(refits) else len(x)
            # the filter forgets its start within weeks; a fixed burn-in keeps it cheap and causal
            f0 = max(first, r - self.burn_in)
            probs = model.filter(x[f0:end])
            out[r:end] = probs[r - f0:]
        return out


def probs_dict(row: np.ndarray | None) -> dict[str, float] | None:
    """A probability row as {regime: p}; None when unknown (before the first fit)."""
    if row is None or not np.all(np.isfinite(row)):
        return None
    return {k: float(v) for k, v in zip(REGIMES, row)}


class RegimeSource:
    """Regime probabilities by date for agents: an index series + a detector, filtered once.

    `probs_at(date)` returns the filtered probabilities of the last index row on or before `date`
    (None before the first fit). The whole path is computed once and cached; that is not a
    look-ahead because `RegimeDetector.filter` is causal row by row (tests/unit/test_regime.py
    proves appending data leaves every past row unchanged).
    """

    def __init__(self, dates: np.ndarray, close: np.ndarray, detector: RegimeDetector | None = None):
        self.dates = np.asarray(dates, dtype="datetime64[D]")
        self.close = np.asarray(close, dtype=float)
        if len(self.dates) != len(self.close) or len(self.dates) == 0:
            raise ValueError("regime source needs equally long, non-empty dates and closes")
        self.detector = detector or RegimeDetector()
        self._path: np.ndarray | None = None

    @classmethod
    def load(cls, paths=None, symbol: str = "KOSPI200", detector: RegimeDetector | None = None,
             end=None) -> "RegimeSource":
        from market.data import DataPaths, load_index
        df = load_index((paths or DataPaths()).path("index"), symbol, end=end)
        df = df.filter(df["close"].is_not_null())
        return cls(df["date"].to_numpy().astype("datetime64[D]"), df["close"].to_numpy(), detector)

    @property
    def path(self) -> np.ndarray:
        if self._path is None:
            self._path = self.detector.filter(self.dates, self.close)
        return self._path

    def probs_at(self, date) -> dict[str, float] | None:
        i = int(np.searchsorted(self.dates, np.datetime64(date, "D"), side="right")) - 1
        return None if i < 0 else probs_dict(self.path[i])
