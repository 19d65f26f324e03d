"""PyTorch sequence forecasters (`gru`, `transformer`): the last T bars of each stock's features in,
the cross-sectional score out, trained and decided like the LightGBM one (strategies/forecaster.py).

Input of a (decision row t, stock) pair: the T (default 20) feature cross-sections of rows
t-T+1..t from strategies/features.py (each row causal, so the window uses bars <= t only), the
stock's own row of each, shape (T, F). Ranked stock features are centred (rank - 0.5) and a missing
value (no bar, no statement yet) becomes 0, the cross-section's middle; market features stay raw.
A pair is scored only when the stock has features at t (a bar that day).

Models (small on purpose: 2 shared CPU cores, 5 seeds x 7 test years in the report):
* GRU: one GRU layer (hidden 32) over the T steps, a linear head on the last hidden state
  (Qlib's GRU baseline, smaller).
* Transformer: a linear embedding of each step, learned position embeddings, one encoder layer
  (4 heads, d_model 32, dropout 0.1), a linear head on the last step's output.

Loss: mean squared error against the centred rank label (rank - 0.5), mini-batches of (date,
stock) pairs drawn in a seeded order. Early stopping: `RankForecaster.fit` hands the purged
validation split (the last `validation_bars` label rows, training labels ending before it) to
`_train`, which keeps the epoch with the best mean daily validation Rank IC (patience
`patience`) and returns it as the candidate's `epochs`; the refit on every purged row trains that
many epochs. Training rows: every `sample_every` (2) bars, the newest `max_train_dates` (750) of
them, a rolling window of about 6 years, so a fit stays inside the CPU budget as the history grows.

Deterministic per seed: torch.manual_seed(seed) for the initial weights and dropout, a numpy
Generator(seed) for the batch order, one thread and torch.use_deterministic_algorithms(True)
while training and predicting (restored afterwards: this module does not change the process's
torch settings).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from market.data import Panel
from strategies.features import FUNDAMENTAL_FEATURES, PRICE_FEATURES
from strategies.forecaster import RankForecaster, daily_ic

ARCHS = ("gru", "transformer")
# one candidate each: early stopping chooses the epochs on validation; a wider search is the job
# of a Tune run, not of every walk-forward fit
DEFAULT_GRIDS: dict[str, tuple[dict[str, Any], ...]] = {
    "gru": ({"hidden": 32, "lr": 1e-3, "dropout": 0.0, "weight_decay": 1e-4},),
    "transformer": ({"d_model": 32, "heads": 4, "layers": 1, "lr": 1e-3, "dropout": 0.1, "weight_decay": 1e-4},),
}
_N_STOCK_FEATURES = len(PRICE_FEATURES) + len(FUNDAMENTAL_FEATURES)  # ranked in (0, 1]; the rest is market


@dataclass(frozen=True)
class FeatureWindows:
    """Sequence inputs at chosen decision rows, without copying a window per row: `block` holds
    the feature rows once, decision row i reads block rows ends[i]-length+1..ends[i]."""

    block: np.ndarray  # (B, N, F) float32, centred, missing = 0
    ends: np.ndarray   # (R,) block row of each decision row
    alive: np.ndarray  # (R, N) the stock has features at the decision row
    length: int

    def __getitem__(self, idx) -> FeatureWindows:
        return FeatureWindows(self.block, self.ends[idx], self.alive[idx], self.length)

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def shape(self) -> tuple[int, int]:
        return self.alive.shape

    def gather(self, r: np.ndarray, n: np.ndarray) -> np.ndarray:
        """(len(r), length, F) windows of the pairs (decision row r[j], stock n[j])."""
        steps = self.ends[r][:, None] - self.length + 1 + np.arange(self.length)
        return self.block[steps, n[:, None]]


def windows_from_rows(features: np.ndarray, length: int, first_row: int, ends: np.ndarray) -> FeatureWindows:
    """FeatureWindows over `features` (B, N, F) = the feature rows first_row..first_row+B-1 of a
    panel, at panel rows `ends`; a window reaching before first_row reads zeros there."""
    alive = np.isfinite(features).any(axis=-1)
    block = np.where(np.isfinite(features), features, np.nan).astype(np.float32)
    block[..., :_N_STOCK_FEATURES] -= 0.5
    block = np.nan_to_num(block, nan=0.0)
    pad = np.zeros((length - 1, *block.shape[1:]), dtype=np.float32)
    local = np.asarray(ends, dtype=np.int64) - first_row
    return FeatureWindows(np.concatenate([pad, block]), local + length - 1, alive[local], length)


class GRUNet(nn.Module):
    def __init__(self, n_features: int, length: int, hidden: int = 32, dropout: float = 0.0, **_: Any):
        super().__init__()
        self.rnn = nn.GRU(n_features, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(self.drop(out[:, -1])).squeeze(-1)


class TransformerNet(nn.Module):
    def __init__(self, n_features: int, length: int, d_model: int = 32, heads: int = 4, layers: int = 1,
                 dropout: float = 0.1, **_: Any):
        super().__init__()
        self.embed = nn.Linear(n_features, d_model)
        self.position = nn.Parameter(torch.zeros(length, d_model))
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, dropout=dropout,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x) + self.position)[:, -1]).squeeze(-1)


NETS: dict[str, type[nn.Module]] = {"gru": GRUNet, "transformer": TransformerNet}
_TRAINING_KEYS = ("lr", "weight_decay", "epochs")


@contextlib.contextmanager
def _deterministic_torch() -> Iterator[None]:
    """One thread, deterministic kernels, for the duration; the caller's settings come back after."""
    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(strict)


@dataclass
class SequenceForecaster(RankForecaster):
    """A rank forecaster whose model reads the last `window` bars of features (GRU or Transformer)."""

    arch: str = "gru"
    window: int = 20
    grid: tuple[dict[str, Any], ...] = ()  # empty: DEFAULT_GRIDS[arch]
    # every 2nd bar, the newest 750 of them (~6 years): on the validation years of the 2016 and
    # 2019 fits denser sampling won clearly (every bar: GRU validation Rank IC 0.081 / 0.136 vs
    # 0.026 / 0.091 with 650 dates, -0.003 / 0.066 every 5th bar); this is as dense as the report's
    # CPU budget (2 models x 7 years x 5 seeds, one thread, ~40 min) allows
    sample_every: int = 2
    max_train_dates: int | None = 750
    max_epochs: int = 12
    patience: int = 3
    fallback_epochs: int = 5  # no validation split (a short history) and no epochs given
    batch_size: int = 512
    name: str = ""  # empty: the arch's name

    def __post_init__(self) -> None:
        if self.arch not in NETS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        self.name = self.name or self.arch
        if not self.grid:
            self.grid = DEFAULT_GRIDS[self.arch]

    @property
    def lookback(self) -> int:
        # the first decision row's window starts where the features have their full lookback
        return self.features.lookback + self.window - 1

    def _needs_validation(self) -> bool:
        return len(self.grid) > 1 or any("epochs" not in p for p in self.grid)

    def _label_rows(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.max_train_dates is None else rows[-self.max_train_dates:]

    # --- inputs ---------------------------------------------------------------------------
    def _features_at(self, panel: Panel, rows: np.ndarray) -> FeatureWindows:
        rows = np.asarray(rows, dtype=np.int64)
        first = max(int(rows.min()) - self.window + 1, 0)
        block_rows = np.arange(first, int(rows.max()) + 1)
        return windows_from_rows(self.features.matrix(panel, block_rows), self.window, first, rows)

    def _latest_features(self, window: Panel) -> FeatureWindows:
        """The last row's window from the bars a decision needs (FeatureBuilder.latest: price
        features on the last lookback + T bars, fundamentals on the whole window)."""
        last = len(window) - 1
        block = self.features.latest(window, steps=self.window)
        return windows_from_rows(block, self.window, last + 1 - len(block), np.array([last]))

    # --- training -------------------------------------------------------------------------
    def _net(self, n_features: int, params: dict[str, Any]) -> nn.Module:
        arch_params = {k: v for k, v in params.items() if k not in _TRAINING_KEYS}
        return NETS[self.arch](n_features, self.window, **arch_params)

    def _train(self, params: dict[str, Any], X: FeatureWindows, y: np.ndarray,
               validation: tuple[Any, np.ndarray] | None = None) -> tuple[Any, dict[str, Any]]:
        r, n = np.nonzero(X.alive & np.isfinite(y))
        target = (y[r, n] - 0.5).astype(np.float32)
        early = validation is not None and "epochs" not in params
        epochs = self.max_epochs if early else int(params.get("epochs", self.fallback_epochs))
        rng = np.random.default_rng(self.seed)
        with _deterministic_torch():
            torch.manual_seed(self.seed)
            net = self._net(X.block.shape[-1], params)
            opt = torch.optim.AdamW(net.parameters(), lr=float(params.get("lr", 1e-3)),
                                    weight_decay=float(params.get("weight_decay", 0.0)))
            best_ic, best_epoch, best_state, stale = -np.inf, 0, copy.deepcopy(net.state_dict()), 0
            for epoch in range(1, epochs + 1):
                net.train()
                order = rng.permutation(len(r))
                for start in range(0, len(order), self.batch_size):
                    b = order[start:start + self.batch_size]
                    opt.zero_grad()
                    pred = net(torch.from_numpy(X.gather(r[b], n[b])))
                    loss = torch.mean((pred - torch.from_numpy(target[b])) ** 2)
                    loss.backward()
                    opt.step()
                if not early:
                    continue
                assert validation is not None
                _, ric = daily_ic(self._predict_net(net, validation[0]), validation[1])
                ic = float(np.nanmean(ric)) if np.isfinite(ric).any() else -np.inf
                if ic > best_ic:
                    best_ic, best_epoch, best_state, stale = ic, epoch, copy.deepcopy(net.state_dict()), 0
                else:
                    stale += 1
                    if stale >= self.patience:
                        break
            if early:
                net.load_state_dict(best_state)
                epochs = max(best_epoch, 1)
        return net, {**params, "epochs": epochs}

    def _predict_net(self, net: nn.Module, X: FeatureWindows, chunk: int = 4096) -> np.ndarray:
        r, n = np.nonzero(X.alive)
        out = np.full(X.shape, np.nan)
        net.eval()
        with torch.no_grad():
            for start in range(0, len(r), chunk):
                rr, nn_ = r[start:start + chunk], n[start:start + chunk]
                out[rr, nn_] = net(torch.from_numpy(X.gather(rr, nn_))).double().numpy()
        return out

    def _predict(self, model: Any, X: FeatureWindows) -> np.ndarray:
        with _deterministic_torch():
            return self._predict_net(model, X)
