"""The trading environment: one small universe, discrete allocation templates, the one accounting.

Decision at the close of bar t → whole-share orders (`orders_for_targets` at close t) → filled
against bar t+1 by `execute` (tick grid, price limits, commission, dated sell tax, slippage) →
reward = net-of-cost log return of equity from close t to close t+1, minus optional turnover and
drawdown penalties. This is exactly how the backtester and the paper broker charge a strategy.

Observation at t = per-symbol features computed from bars <= t only (`features`), standardised
with a `Normaliser` fitted on the training window only, clipped to ±5, plus a one-hot of the
previous action (the agent's own last target; a live agent knows it without seeing the broker).

Actions (Discrete): 0 = all cash, 1 = equal weight at half exposure, 2 = equal weight fully
invested, 2+i = half in symbol i and the other half equal-weighted. Every template is long-only
and sums to <= `MAX_GROSS`, so DQN (needs discrete actions) and APPO (categorical policy) learn
the same action space and no projection of invalid actions is needed.

The step loop is numpy only: features, dates, tax rates and forward-filled closes are computed
once in `__init__`.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from market import krx
from market.accounting import (
    AccountingInputs,
    Bar,
    CostModel,
    execute,
    orders_for_targets,
)
from market.data import Panel

DEFAULT_UNIVERSE = ("005930", "000660", "005380", "005490", "055550")
FEATURE_NAMES = ("ret1", "ret5", "ret20", "ret60", "vol20", "ma20_gap", "range")
LOOKBACK = 61  # bars a feature row needs (ret60 uses close[t-60])
MAX_GROSS = 0.98  # leave room for costs so full-exposure templates are always fundable
CLIP = 5.0


def action_templates(n_symbols: int) -> np.ndarray:
    """(3 + N, N) target-weight templates; row a is what action a asks for."""
    if n_symbols < 1:
        raise ValueError("the universe needs at least one symbol")
    ew = np.full(n_symbols, MAX_GROSS / n_symbols)
    rows = [np.zeros(n_symbols), ew / 2, ew]
    for i in range(n_symbols):
        w = ew / 2
        w = w.copy()
        w[i] += MAX_GROSS / 2
        rows.append(w)
    return np.array(rows)


def _rolling(x: np.ndarray, n: int) -> np.ndarray:
    """(T, N) → (T, N, n) windows ending at each row; rows < n-1 are NaN-padded."""
    pad = np.full((n - 1, x.shape[1]), np.nan)
    xp = np.concatenate([pad, x], axis=0)
    return np.lib.stride_tricks.sliding_window_view(xp, n, axis=0)


def features(panel: Panel) -> np.ndarray:
    """(T, N, F) features; row t uses only bars <= t (NaN where history is too short)."""
    c, h, lo = panel.close, panel.high, panel.low
    with np.errstate(divide="ignore", invalid="ignore"):
        logc = np.log(c)

        def lag_ret(k):
            out = np.full_like(logc, np.nan)
            out[k:] = logc[k:] - logc[:-k]
            return out

        r1 = lag_ret(1)
        vol20 = np.std(_rolling(r1, 20), axis=-1)
        sma20 = np.mean(_rolling(c, 20), axis=-1)
        gap = np.log(c / sma20)
        rng = np.log(h / lo)
    vol20 = np.where(np.isfinite(r1), vol20, np.nan)
    return np.stack([r1, lag_ret(5), lag_ret(20), lag_ret(60), vol20, gap, rng], axis=-1)


@dataclass
class Normaliser:
    """Per (symbol, feature) mean and std, fitted on the training window's rows only."""

    mean: np.ndarray  # (N, F)
    std: np.ndarray   # (N, F)

    @classmethod
    def fit(cls, feats: np.ndarray) -> Normaliser:
        ok = np.isfinite(feats)
        if not ok.any():
            raise ValueError("no finite feature values in the training window to fit the normaliser")
        import warnings

        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a symbol with no bars in the window
            mean = np.nanmean(np.where(ok, feats, np.nan), axis=0)
            std = np.nanstd(np.where(ok, feats, np.nan), axis=0)
        mean = np.nan_to_num(mean)
        std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
        return cls(mean=mean, std=std)

    def apply(self, row: np.ndarray) -> np.ndarray:
        z = (row - self.mean) / self.std
        return np.clip(np.nan_to_num(z, nan=0.0, posinf=CLIP, neginf=-CLIP), -CLIP, CLIP)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Normaliser:
        return cls(mean=np.asarray(d["mean"], dtype=float), std=np.asarray(d["std"], dtype=float))


def mark_to_market(cash, holdings: np.ndarray, close: np.ndarray):
    """Cash plus holdings at `close`, for one account or a batch (rows): the one expression the
    env and the vector env both use, so their equity agrees to the last bit."""
    return cash + (holdings * close).sum(axis=-1)


def observation(feat_row: np.ndarray, norm: Normaliser, prev_action: int, n_actions: int) -> np.ndarray:
    """The observation vector: normalised features (N*F) then a one-hot of the previous action."""
    onehot = np.zeros(n_actions, dtype=np.float32)
    onehot[prev_action] = 1.0
    return np.concatenate([norm.apply(feat_row).astype(np.float32).ravel(), onehot])


@dataclass
class EnvSpec:
    """Everything that defines the environment apart from the data (stored with every model)."""

    symbols: tuple[str, ...] = DEFAULT_UNIVERSE
    train_start: str = "2008-01-01"
    train_end: str = "2016-12-31"
    episode_len: int = 120
    initial_cash: int = 100_000_000
    turnover_penalty: float = 0.0
    drawdown_penalty: float = 0.0
    commission_rate: float = krx.DEFAULT_COMMISSION_RATE
    slippage_range_frac: float = 0.05
    slippage_ticks: float = 0.0
    # rebalance band: skip orders smaller than this (KRW); passed to orders_for_targets, so a
    # held template does not churn commission on every small drift (and steps stay cheap)
    min_trade_value: float = 1_000_000.0
    normaliser: dict | None = field(default=None, repr=False)  # fitted stats (set by TradingEnv)

    def costs(self) -> CostModel:
        return CostModel(commission_rate=self.commission_rate, slippage_ticks=self.slippage_ticks,
                         slippage_range_frac=self.slippage_range_frac)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["symbols"] = list(self.symbols)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EnvSpec:
        d = dict(d)
        d["symbols"] = tuple(d["symbols"])
        return cls(**d)


class TradingEnv(gym.Env):
    """Gymnasium env over a Panel; `env_config` = {"panel": Panel, "spec": EnvSpec|dict,
    "eval_window": (start, end) | None, "seed": int}.

    Training mode samples `episode_len`-bar episodes whose decisions and fills all lie inside the
    training window. Eval mode (`eval_window` set) runs once, deterministically, over that window.
    """

    metadata = {"render_modes": []}  # noqa: RUF012  (gymnasium's Env declares it an instance attribute)

    def __init__(self, env_config: dict | None = None):
        cfg = dict(env_config or {})
        if "panel" not in cfg:
            raise ValueError("TradingEnv needs env_config['panel'] (a market.data.Panel)")
        spec = cfg.get("spec") or EnvSpec()
        self.spec_ = spec if isinstance(spec, EnvSpec) else EnvSpec.from_dict(spec)
        panel: Panel = cfg["panel"].select(self.spec_.symbols)
        self.panel = panel
        n = len(self.spec_.symbols)
        self.templates = action_templates(n)
        self.n_actions = len(self.templates)
        self.feats = features(panel)
        self.costs = self.spec_.costs()

        tr_lo, tr_hi = self._window(self.spec_.train_start, self.spec_.train_end, "training")
        if self.spec_.normaliser is None:
            self.norm = Normaliser.fit(self.feats[tr_lo:tr_hi + 1])
            self.spec_.normaliser = self.norm.to_dict()
        else:
            self.norm = Normaliser.from_dict(self.spec_.normaliser)

        eval_window = cfg.get("eval_window")
        if eval_window is not None:
            lo, hi = self._window(eval_window[0], eval_window[1], "evaluation")
        else:
            lo, hi = tr_lo, tr_hi
        # first decision needs LOOKBACK bars of history; the last fill must be inside the window
        self.lo, self.hi = max(lo, LOOKBACK - 1), hi
        self.eval_mode = eval_window is not None
        if self.hi - self.lo < 2 or (not self.eval_mode and self.hi - self.lo <= self.spec_.episode_len):
            raise ValueError(f"window {panel.date(lo)}..{panel.date(hi)} has too few bars "
                             f"({self.hi - self.lo}) for episodes of {self.spec_.episode_len}")

        # per-row constants so step() does no date or table work
        self.py_dates: list[dt.date] = [d.item() for d in panel.dates.astype("datetime64[D]")]
        # reference prices, price-limit bases and dated sell tax: the backtester's own helper
        self.inputs = AccountingInputs.build(panel.dates, panel.close, self.costs.market)
        self.tax = self.inputs.sell_tax
        self.close_ff = np.nan_to_num(self.inputs.ref_price)
        # normalisation is elementwise, so doing it once for every row gives the same numbers as
        # `observation()` does row by row (RLAgent uses that)
        self.zfeats = self.norm.apply(self.feats).astype(np.float32).reshape(len(panel), -1)
        self._onehots = np.eye(self.n_actions, dtype=np.float32)
        self.observation_space = gym.spaces.Box(-CLIP, CLIP, (n * len(FEATURE_NAMES) + self.n_actions,),
                                                np.float32)
        self.action_space = gym.spaces.Discrete(self.n_actions)
        self._rng = np.random.default_rng(cfg.get("seed"))
        self.t = self.lo
        self.end = self.hi

    def _window(self, start, end, what: str) -> tuple[int, int]:
        p = self.panel
        lo = int(np.searchsorted(p.dates, np.datetime64(start, "D")))
        hi = p.index_of(end)
        if lo >= len(p) or hi < lo:
            raise ValueError(f"the {what} window {start}..{end} has no bars in the data "
                             f"({p.date(0)}..{p.date(len(p) - 1)})")
        return lo, hi

    # -- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if self.eval_mode:
            self.t, self.end = self.lo, self.hi
        else:
            last_start = self.hi - self.spec_.episode_len
            self.t = int(self._rng.integers(self.lo, last_start + 1))
            self.end = self.t + self.spec_.episode_len
        self.cash = int(self.spec_.initial_cash)
        self.holdings = np.zeros(len(self.spec_.symbols), dtype=np.int64)
        self.prev_action = 0
        self.equity = float(self.cash)
        self.peak = self.equity
        self.traded_value = 0.0
        self.costs_paid = 0
        return self._obs(), {"equity": self.equity, "date": str(self.py_dates[self.t])}

    def step(self, action):
        a = int(action)
        if not 0 <= a < self.n_actions:
            raise ValueError(f"action {action} outside 0..{self.n_actions - 1}")
        t = self.t
        fill = self.trade(self.templates[a], t)
        self.t = t + 1
        new_equity = self.mark(self.t)
        traded = float(np.sum(fill.notional)) if fill is not None else 0.0
        self.traded_value += traded
        dd_before = 1.0 - self.equity / self.peak
        self.peak = max(self.peak, new_equity)
        dd_after = 1.0 - new_equity / self.peak
        reward = float(np.log(new_equity / self.equity))
        reward -= self.spec_.turnover_penalty * traded / self.equity
        reward -= self.spec_.drawdown_penalty * max(0.0, dd_after - dd_before)
        self.equity = new_equity
        self.prev_action = a
        truncated = self.t >= self.end
        info = {"equity": new_equity, "traded": traded, "t": self.t}
        return self._obs(), reward, False, truncated, info

    # -- the accounting (shared with the backtester and the paper broker) ----------------------
    def trade(self, weights: np.ndarray, t: int):
        """Orders at close t toward `weights`, filled on bar t+1; updates cash and holdings."""
        idx, side, qty = orders_for_targets(weights, self.holdings, self.cash, self.inputs.ref_price[t],
                                            min_trade_value=self.spec_.min_trade_value)
        if len(idx) == 0:
            return None
        p = self.panel
        bar = Bar(open=p.open[t + 1, idx], high=p.high[t + 1, idx], low=p.low[t + 1, idx],
                  prev_close=self.inputs.prev_close[t + 1, idx])
        ex = execute(idx, side, qty, np.full(len(idx), np.nan), bar, self.py_dates[t + 1],
                     float(self.tax[t + 1]), self.cash, self.holdings, self.costs)
        self.cash, self.holdings = ex.cash, ex.holdings
        self.costs_paid += int(ex.commission.sum() + ex.tax.sum())
        return ex

    def mark(self, t: int) -> float:
        """Equity at close t (last known close for a symbol without a bar that day)."""
        return float(mark_to_market(self.cash, self.holdings, self.close_ff[t]))

    def observation_at(self, t: int, prev_action: int) -> np.ndarray:
        return np.concatenate([self.zfeats[t], self._onehots[prev_action]])

    def _obs(self) -> np.ndarray:
        return self.observation_at(self.t, self.prev_action)


def run_greedy(env: TradingEnv, act) -> dict:
    """Run `act(obs) -> action` over an eval-mode env once. Returns equity curve and traded value."""
    if not env.eval_mode:
        raise ValueError("run_greedy needs an env built with eval_window")
    obs, info = env.reset()
    equity = [info["equity"]]
    actions = []
    done = False
    while not done:
        a = int(act(obs))
        obs, _, term, trunc, info = env.step(a)
        equity.append(info["equity"])
        actions.append(a)
        done = term or trunc
    return {"equity": np.array(equity), "traded_value": env.traded_value, "actions": np.array(actions),
            "dates": env.py_dates[env.lo:env.t + 1], "costs": env.costs_paid}
