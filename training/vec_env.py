"""`VecTradingEnv`: many TradingEnv episodes stepped at once on the batched accounting kernel.

Sub-environment i is TradingEnv with seed `seed + i`, step for step: the same episode starts
(each sub-environment draws them from its own generator, in the same order), the same
observations, the same whole-share orders and fills (`orders_for_targets_batch` /
`execute_batch` in market/accounting.py, which are tested equal to the scalar accounting), the
same rewards. The data work (features, normaliser, accounting inputs, windows) is TradingEnv's
own: one TradingEnv is built and its arrays are shared, so the two cannot drift apart.

Autoreset is gymnasium's NEXT_STEP mode, what RLlib 2.60's SingleAgentEnvRunner expects (an
episode it sees as done is answered by a reset observation on the next step, whose action is
ignored).

RLlib (new API stack): `register_vector_env()`, then `config.environment(VECTOR_ENV_ID,
env_config=...)` plus `config.env_runners(gym_env_vectorize_mode=gym.VectorizeMode.VECTOR_ENTRY_POINT)`.
For a registered env id the env runner registers `vector_entry_point=lambda num_envs:
creator(env_ctx | {"num_envs": num_envs})` with gymnasium and `gym.make_vec` calls it
(ray/rllib/env/single_agent_env_runner.py `make_env`), so the creator, `make_trading_env`, returns
this class when the config carries `num_envs`. (RLlib's Algorithm accepts only a class or a
registered id as `env`, not a plain function.)
"""
from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from market.accounting import QuoteTable, execute_batch, orders_for_targets_batch
from training.env import TradingEnv, mark_to_market


class VecTradingEnv(gym.vector.VectorEnv):
    """`env_config` as TradingEnv's ({"panel", "spec", "eval_window", "seed"}) plus "num_envs"."""

    metadata: ClassVar[dict] = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, env_config: dict | None = None, num_envs: int | None = None):
        cfg = dict(env_config or {})
        n_envs = int(num_envs if num_envs is not None else cfg.pop("num_envs", 1))
        cfg.pop("num_envs", None)
        if n_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {n_envs}")
        self.base = base = TradingEnv(cfg)
        self.num_envs = n_envs
        self.spec_ = base.spec_
        self.single_observation_space = base.observation_space
        self.single_action_space = base.action_space
        self.observation_space = gym.vector.utils.batch_space(base.observation_space, n_envs)
        self.action_space = gym.vector.utils.batch_space(base.action_space, n_envs)
        self.templates, self.n_actions = base.templates, base.n_actions
        self.costs = base.costs
        p = base.panel
        # market-order fill prices of every bar, from `fill_prices` itself (one table, built once)
        self.quotes = QuoteTable.build(p.dates, p.open, p.high, p.low, base.inputs.prev_close, self.costs)
        self.ref_price, self.tax, self.close_ff = base.inputs.ref_price, base.tax, base.close_ff
        self.zfeats, self._onehots = base.zfeats, base._onehots
        seed = cfg.get("seed")
        self._rngs = [np.random.default_rng(None if seed is None else int(seed) + i) for i in range(n_envs)]
        n = len(self.spec_.symbols)
        self.t = np.zeros(n_envs, dtype=np.int64)
        self.end = np.zeros(n_envs, dtype=np.int64)
        self.cash = np.zeros(n_envs, dtype=np.int64)
        self.holdings = np.zeros((n_envs, n), dtype=np.int64)
        self.prev_action = np.zeros(n_envs, dtype=np.int64)
        self.equity = np.zeros(n_envs)
        self.peak = np.zeros(n_envs)
        self.traded_value = np.zeros(n_envs)
        self.costs_paid = np.zeros(n_envs, dtype=np.int64)
        self._done = np.zeros(n_envs, dtype=bool)
        self._all = np.arange(n_envs)

    # -- episodes ------------------------------------------------------------------------------
    def _start(self, envs: np.ndarray) -> None:
        """Begin new episodes in `envs` exactly as TradingEnv.reset does."""
        base = self.base
        for i in envs:
            if base.eval_mode:
                self.t[i], self.end[i] = base.lo, base.hi
            else:
                last_start = base.hi - self.spec_.episode_len
                self.t[i] = int(self._rngs[i].integers(base.lo, last_start + 1))
                self.end[i] = self.t[i] + self.spec_.episode_len
        self.cash[envs] = int(self.spec_.initial_cash)
        self.holdings[envs] = 0
        self.prev_action[envs] = 0
        self.equity[envs] = float(self.spec_.initial_cash)
        self.peak[envs] = self.equity[envs]
        self.traded_value[envs] = 0.0
        self.costs_paid[envs] = 0
        self._done[envs] = False

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.zfeats[self.t], self._onehots[self.prev_action]], axis=1)

    def _info(self, traded: np.ndarray) -> dict[str, Any]:
        every = np.ones(self.num_envs, dtype=bool)
        return {"equity": self.equity.copy(), "_equity": every, "traded": traded, "_traded": every,
                "t": self.t.copy(), "_t": every}

    # -- gymnasium vector API ------------------------------------------------------------------
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        """Reset every sub-environment. An int seed seeds sub-environment i with seed + i (as
        gymnasium's SyncVectorEnv does), a list seeds them one by one."""
        if seed is not None:
            seeds = ([int(seed) + i for i in range(self.num_envs)] if isinstance(seed, (int, np.integer))
                     else list(seed))
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset got {len(seeds)} seeds for {self.num_envs} environments")
            for i, s in enumerate(seeds):
                if s is not None:
                    self._rngs[i] = np.random.default_rng(s)
        self._start(self._all)
        return self._obs(), self._info(np.zeros(self.num_envs))

    def step(self, actions):
        a = np.asarray(actions, dtype=np.int64).reshape(-1)
        if a.shape != (self.num_envs,):
            raise ValueError(f"step needs {self.num_envs} actions, got shape {np.shape(actions)}")
        if ((a < 0) | (a >= self.n_actions)).any():
            bad = a[(a < 0) | (a >= self.n_actions)][0]
            raise ValueError(f"action {bad} outside 0..{self.n_actions - 1}")
        restart = self._done.copy()
        live = self._all if not restart.any() else np.flatnonzero(~restart)
        traded = np.zeros(self.num_envs)
        reward = np.zeros(self.num_envs)
        if len(live):
            t = self.t[live]
            u = t + 1
            sells, buys = orders_for_targets_batch(self.templates[a[live]], self.holdings[live], self.cash[live],
                                                   self.ref_price[t], min_trade_value=self.spec_.min_trade_value)
            ex = execute_batch(sells, buys, self.quotes.buy[u], self.quotes.sell[u], self.quotes.status[u],
                               self.tax[u], self.cash[live], self.holdings[live], self.costs)
            self.cash[live], self.holdings[live] = ex.cash, ex.holdings
            self.costs_paid[live] += ex.commission.sum(axis=1) + ex.tax.sum(axis=1)
            traded[live] = ex.notional.sum(axis=1).astype(float)
            new_equity = mark_to_market(ex.cash, ex.holdings, self.close_ff[u])
            equity, peak = self.equity[live], self.peak[live]
            dd_before = 1.0 - equity / peak
            peak = np.maximum(peak, new_equity)
            dd_after = 1.0 - new_equity / peak
            r = np.log(new_equity / equity)
            r -= self.spec_.turnover_penalty * traded[live] / equity
            r -= self.spec_.drawdown_penalty * np.maximum(0.0, dd_after - dd_before)
            reward[live] = r
            self.t[live], self.equity[live], self.peak[live] = u, new_equity, peak
            self.traded_value[live] += traded[live]
            self.prev_action[live] = a[live]
        truncated = ~restart & (self.t >= self.end)
        if restart.any():  # NEXT_STEP autoreset: these answer this step with a fresh episode
            self._start(np.flatnonzero(restart))
        self._done = truncated
        terminated = np.zeros(self.num_envs, dtype=bool)
        return self._obs(), reward, terminated, truncated.copy(), self._info(traded)


def make_trading_env(env_config: dict | None = None) -> gym.Env | gym.vector.VectorEnv:
    """The env creator for RLlib: VecTradingEnv when the config names `num_envs` (RLlib's
    VECTOR_ENTRY_POINT mode adds it), a single TradingEnv otherwise."""
    cfg = dict(env_config or {})
    if "num_envs" in cfg:
        return VecTradingEnv(cfg)
    return TradingEnv(cfg)


VECTOR_ENV_ID = "krx-trading-vec"


def register_vector_env() -> str:
    """Register `make_trading_env` with RLlib under VECTOR_ENV_ID (Ray's registry reaches the
    remote env runners too). Returns the id."""
    from ray.tune.registry import register_env

    register_env(VECTOR_ENV_ID, make_trading_env)
    return VECTOR_ENV_ID
