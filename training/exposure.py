"""An RL exposure controller: a policy that sets the gross exposure of the ensemble's book (issue 12).

The ensemble decides *what* to hold; the controller decides *how much*: at each of the ensemble's
decision bars it picks a level in LEVELS (share of equity invested in the book, the rest cash)
from the market's state. This is the role the seed's drawdown claim is about, and one where daily
data is enough to learn: one decision a week from a dozen market-wide features, instead of a
weight per stock.

* `market_state(...)`: the observation's market part, row t from bars <= t only — KOSPI200 log
  returns over 5/20/60/120 bars, 20- and 60-bar volatility, the gap to its 200-bar mean, its
  drawdown from the 250-bar high, breadth (share of names above their 50-bar mean), and the HMM
  regime probabilities (strategies/regime.py, filtered causally).
* `ExposureEnv`: a gymnasium VectorEnv over the book's daily returns at full exposure (the default
  ensemble traded through the backtest engine, so its own orders, fills and costs are in them).
  One step = one decision and the `step_bars` bars after it. Scaling the book costs
  `cost_rate` per won traded (the book's own cost per traded won on the training window), and the
  new exposure takes effect one bar late (the decision at close t fills at the open of t+1; the
  env charges bar t+1 at the old exposure, which is slightly pessimistic). Reward: the log growth
  of the account − `turnover_penalty` × traded share of equity − `drawdown_penalty` × the rise in
  drawdown.
* `ExposureControlled`: the backtester's strategy — the ensemble's targets times the level the
  policy picks on the same bar from the same features, through the real engine. The report's test
  numbers come from it, not from the env.

Observations: the market features standardised with mean/std of the training rows only (clipped
to ±5), the account's drawdown from its peak at decision bars, and a one-hot of the previous level.
"""
from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np

from market.accounting import ffill_close
from strategies import defaults as D

LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)
FEATURES = ("ret_5", "ret_20", "ret_60", "ret_120", "vol_20", "vol_60", "gap_ma200", "drawdown_250",
            "breadth_ma50", "p_bull", "p_bear", "p_sideways")
EXPOSURE_ENV_ID = "krx-exposure-vec"


def _rolling_mean(x: np.ndarray, n: int) -> np.ndarray:
    """Mean of rows t-n+1..t (NaN until n rows), along axis 0; NaN inputs make a NaN mean."""
    c = np.cumsum(np.nan_to_num(x, nan=0.0), axis=0)
    bad = np.cumsum(~np.isfinite(x), axis=0)
    out = np.full(x.shape, np.nan)
    out[n - 1:] = c[n - 1:] - np.concatenate([np.zeros((1,) + x.shape[1:]), c[:-n]])
    nbad = bad[n - 1:] - np.concatenate([np.zeros((1,) + x.shape[1:]), bad[:-n]])
    out[n - 1:] = np.where(nbad == 0, out[n - 1:] / n, np.nan)
    return out


def market_state(index_close: np.ndarray, close: np.ndarray, regime_probs: np.ndarray) -> np.ndarray:
    """(T, len(FEATURES)) market features; row t uses rows <= t of every input (NaN until known).

    `index_close` (T,) KOSPI200 closes on the panel's dates (NaN: no value; carried forward),
    `close` (T, N) the panel's closes (NaN: no bar), `regime_probs` (T, 3) bull/bear/sideways.
    """
    idx = ffill_close(np.asarray(index_close, dtype=float)[:, None])[:, 0]  # the last value over a missing day
    T = len(idx)
    logp = np.log(idx)
    out = np.full((T, len(FEATURES)), np.nan)
    for k, n in enumerate((5, 20, 60, 120)):
        out[n:, k] = logp[n:] - logp[:-n]
    r1 = np.full(T, np.nan)
    r1[1:] = np.diff(logp)
    for k, n in ((4, 20), (5, 60)):
        m = _rolling_mean(r1, n)
        m2 = _rolling_mean(r1 ** 2, n)
        out[:, k] = np.sqrt(np.maximum(m2 - m ** 2, 0.0) * n / max(n - 1, 1) * 252)
    out[:, 6] = logp - np.log(_rolling_mean(idx, 200))
    high = np.full(T, np.nan)
    for t in range(249, T):
        high[t] = np.nanmax(idx[t - 249:t + 1])
    out[:, 7] = idx / high - 1.0
    c = np.asarray(close, dtype=float)
    ma50 = _rolling_mean(c, 50)
    known = np.isfinite(ma50) & np.isfinite(c)
    above = np.where(known, c > ma50, False).sum(axis=1)
    n_known = known.sum(axis=1)
    out[:, 8] = np.where(n_known > 0, above / np.maximum(n_known, 1), np.nan)
    out[:, 9:12] = np.asarray(regime_probs, dtype=float)
    return out


def observation(z: np.ndarray, drawdown: np.ndarray, prev_level: np.ndarray) -> np.ndarray:
    """The policy's input: standardised market features (n, F), the account's drawdown (n,) (≤ 0),
    and a one-hot of the previous level index (n,). The env and ExposureControlled both call this."""
    onehot = np.eye(len(LEVELS), dtype=np.float32)[np.asarray(prev_level, dtype=np.int64)]
    return np.concatenate([z, np.asarray(drawdown, dtype=np.float32)[:, None] * 4.0, onehot], axis=1)


class ExposureEnv(gym.vector.VectorEnv):
    """`num_envs` episodes of the exposure problem stepped at once (gymnasium NEXT_STEP autoreset,
    what RLlib's env runner expects).

    env_config: "returns" (T,) the book's daily returns at full exposure (row t: close t-1 → t),
    "z" (T, F) standardised market features, "window" (lo, hi) rows an episode's decisions and
    fills stay inside, "episode_steps" (None: one episode over the whole window, deterministic —
    evaluation), "step_bars", "cost_rate", "turnover_penalty", "drawdown_penalty", "seed".
    Sub-environment i draws its episode starts from seed + i.
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, env_config: dict, num_envs: int | None = None):
        cfg = dict(env_config)
        n_envs = int(num_envs if num_envs is not None else cfg.get("num_envs", 1))
        if n_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {n_envs}")
        self.r = np.asarray(cfg["returns"], dtype=float)
        self.z = np.asarray(cfg["z"], dtype=np.float32)
        if self.z.ndim != 2 or len(self.z) != len(self.r):
            raise ValueError(f"z must be (T, F) with T = len(returns) = {len(self.r)}, got {self.z.shape}")
        if not np.isfinite(self.r).all():
            raise ValueError("returns must be finite (the book's daily returns at full exposure)")
        self.lo, self.hi = (int(v) for v in cfg["window"])
        self.step_bars = int(cfg.get("step_bars", D.REBALANCE_EVERY))
        self.episode_steps = cfg.get("episode_steps", 52)
        span = (self.hi - 1 - self.lo) // self.step_bars  # decisions whose bars all lie inside
        if span < 1 or (self.episode_steps is not None and span < int(self.episode_steps)):
            raise ValueError(f"window rows {self.lo}..{self.hi} hold {span} steps of {self.step_bars} bars, "
                             f"fewer than an episode ({self.episode_steps})")
        self.cost_rate = float(cfg.get("cost_rate", 0.003))
        self.turnover_penalty = float(cfg.get("turnover_penalty", 0.0))
        self.drawdown_penalty = float(cfg.get("drawdown_penalty", 0.0))
        self.levels = np.asarray(LEVELS)
        self.num_envs = n_envs
        n_obs = self.z.shape[1] + 1 + len(LEVELS)
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (n_obs,), np.float32)
        self.single_action_space = gym.spaces.Discrete(len(LEVELS))
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, n_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, n_envs)
        seed = cfg.get("seed")
        self._rngs = [np.random.default_rng(None if seed is None else int(seed) + i) for i in range(n_envs)]
        self.t = np.zeros(n_envs, dtype=np.int64)
        self.end = np.zeros(n_envs, dtype=np.int64)
        self.equity = np.ones(n_envs)
        self.invested = np.ones(n_envs)  # value in the book; the rest of equity is cash
        self.peak = np.ones(n_envs)
        self.prev = np.full(n_envs, len(LEVELS) - 1, dtype=np.int64)
        self.traded = np.zeros(n_envs)
        self._done = np.zeros(n_envs, dtype=bool)

    def _start(self, envs: np.ndarray) -> None:
        for i in envs:
            if self.episode_steps is None:
                self.t[i] = self.lo
                self.end[i] = self.lo + ((self.hi - 1 - self.lo) // self.step_bars) * self.step_bars
            else:
                length = int(self.episode_steps) * self.step_bars
                self.t[i] = int(self._rngs[i].integers(self.lo, self.hi - 1 - length + 1))
                self.end[i] = self.t[i] + length
        # an episode starts fully in the book (the ensemble as it trades without a controller)
        self.equity[envs], self.invested[envs], self.peak[envs] = 1.0, 1.0, 1.0
        self.prev[envs] = len(LEVELS) - 1
        self.traded[envs] = 0.0
        self._done[envs] = False

    def _obs(self) -> np.ndarray:
        return observation(self.z[self.t], self.equity / self.peak - 1.0, self.prev)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        if seed is not None:
            seeds = [int(seed) + i for i in range(self.num_envs)] if isinstance(seed, (int, np.integer)) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset got {len(seeds)} seeds for {self.num_envs} environments")
            for i, s in enumerate(seeds):
                if s is not None:
                    self._rngs[i] = np.random.default_rng(s)
        self._start(np.arange(self.num_envs))
        return self._obs(), {}

    def step(self, actions):
        a = np.asarray(actions, dtype=np.int64).reshape(-1)
        if a.shape != (self.num_envs,):
            raise ValueError(f"step needs {self.num_envs} actions, got shape {np.shape(actions)}")
        if ((a < 0) | (a >= len(LEVELS))).any():
            raise ValueError(f"actions must lie in 0..{len(LEVELS) - 1}, got {a.tolist()}")
        restart = self._done.copy()
        live = ~restart
        e0, inv0 = self.equity.copy(), self.invested.copy()
        dd0 = 1.0 - self.equity / self.peak
        eq, inv = self.equity.copy(), self.invested.copy()
        traded = np.zeros(self.num_envs)
        self.path = np.zeros((self.num_envs, self.step_bars))  # equity at each bar's close (evaluation)
        for j in range(self.step_bars):
            r = self.r[np.minimum(self.t + 1 + j, len(self.r) - 1)]
            inv_new = inv * (1.0 + r)
            eq = eq + (inv_new - inv)
            inv = inv_new
            if j == 0:  # filled at the next open: bar t+1 still at the old exposure
                target = self.levels[a] * eq
                traded = np.abs(target - inv)
                eq = eq - self.cost_rate * traded
                inv = np.minimum(target, eq)
            self.path[:, j] = eq
        peak = np.maximum(self.peak, eq)
        dd1 = 1.0 - eq / peak
        reward = (np.log(eq / e0) - self.turnover_penalty * traded / e0
                  - self.drawdown_penalty * np.maximum(0.0, dd1 - dd0))
        reward = np.where(live, reward, 0.0)
        self.equity = np.where(live, eq, e0)
        self.invested = np.where(live, inv, inv0)
        self.peak = np.where(live, peak, self.peak)
        self.traded += np.where(live, traded / e0, 0.0)
        self.prev = np.where(live, a, self.prev)
        self.t = np.where(live, self.t + self.step_bars, self.t)
        truncated = live & (self.t >= self.end)
        if restart.any():  # NEXT_STEP autoreset: answered with a fresh episode, action ignored
            self._start(np.flatnonzero(restart))
        self._done = truncated
        return self._obs(), reward, np.zeros(self.num_envs, dtype=bool), truncated.copy(), {}


def make_exposure_env(env_config: dict | None = None) -> ExposureEnv:
    return ExposureEnv(dict(env_config or {}))


def register_exposure_env() -> str:
    from ray.tune.registry import register_env

    register_env(EXPOSURE_ENV_ID, make_exposure_env)
    return EXPOSURE_ENV_ID


def run_policy(env_config: dict, act: Callable[[np.ndarray], np.ndarray]) -> dict[str, Any]:
    """One deterministic episode over env_config's window (evaluation): equity at each bar's close
    (from 1 at the first decision), the levels chosen, the traded share of equity. `act` maps
    observations (1, n_obs) → actions."""
    env = ExposureEnv({**env_config, "episode_steps": None, "seed": 0}, num_envs=1)
    obs, _ = env.reset()
    equity, levels = [1.0], []
    while True:
        a = np.asarray(act(obs)).reshape(1)
        levels.append(int(a[0]))
        obs, _, _, trunc, _ = env.step(a)
        equity.extend(env.path[0].tolist())
        if trunc[0]:
            break
    return {"equity": np.array(equity), "levels": np.array(levels), "traded": float(env.traded[0])}


class ExposureControlled:
    """A backtest strategy: `inner`'s targets (the ensemble) times the level `act` picks.

    On each bar the engine asks (the inner strategy's decision bars), the controller sees the
    market features of that bar (`features`: rows aligned to the panel's dates by date, so a
    window's last row is the bar's own), the account's drawdown from its peak over the decision
    bars so far, and its previous level — what ExposureEnv gives the policy. Before `active_from`
    the level is 1 (the book runs uncontrolled: a test window starts from the same account the
    uncontrolled run has there).
    """

    needs_account = True

    def __init__(self, inner, dates: np.ndarray, z: np.ndarray, act: Callable[[np.ndarray], np.ndarray],
                 active_from=None, name: str = "exposure-controlled"):
        self.inner, self.act, self.name = inner, act, name
        self.dates = np.asarray(dates, dtype="datetime64[D]")
        self.z = np.asarray(z, dtype=np.float32)
        self.active_from = None if active_from is None else np.datetime64(active_from, "D")
        self.peak = 0.0
        self.prev = len(LEVELS) - 1
        self.levels: list[tuple[str, float]] = []

    @property
    def rebalance(self):
        return self.inner.rebalance

    @property
    def lookback(self) -> int:
        return self.inner.lookback

    def fit(self, history) -> None:
        self.inner.fit(history)

    def target_weights(self, window, account=None) -> np.ndarray:
        w = np.asarray(self.inner.target_weights(window, account), dtype=float)
        day = np.datetime64(window.dates[-1], "D")
        equity = 1.0
        if account is not None:  # valued as the pipeline values it (last known closes)
            from strategies.pipeline import Snapshot
            equity, _ = account.valuation(Snapshot.from_panel(window.tail(self.inner.lookback)))
        self.peak = max(self.peak, equity)
        if self.active_from is not None and day < self.active_from:
            self.peak = equity  # the controller's own account starts at its first active bar
            return w
        row = int(np.searchsorted(self.dates, day))
        if row >= len(self.dates) or self.dates[row] != day:
            raise ValueError(f"{self.name}: no market features for {day}")
        obs = observation(self.z[row:row + 1], np.array([equity / self.peak - 1.0]), np.array([self.prev]))
        self.prev = int(np.asarray(self.act(obs)).reshape(-1)[0])
        level = LEVELS[self.prev]
        self.levels.append((str(day), level))
        return w * level
