"""Environment steps per second: TradingEnv and VecTradingEnv (the real accounting) vs a plain
gymnasium loop.

The peer is the smallest honest trading env over the same data: it indexes precomputed
observations and rewards the template's close-to-close return (no orders, no fills, no costs).
The ratio says what the one accounting (whole shares, tick grid, limits, fees, tax) costs per
step. VecTradingEnv steps `--num-envs` episodes at once on the batched kernel (the same fills as
TradingEnv, tests/unit/test_rl_vec_env.py); its steps/s counts sub-environment steps. Numpy's
thread pools are pinned to one thread, so every figure is one core.
Run: /work/main/.venv/bin/python bench/rl_env_steps.py [--steps 5000] [--num-envs 256]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported: one core, as the line printed says

import gymnasium as gym  # noqa: E402  (after the thread pinning and the path insert)
import numpy as np  # noqa: E402  (after the thread pinning and the path insert)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from market.data import load_panel  # noqa: E402  (after the thread pinning and the path insert)
from training.env import DEFAULT_UNIVERSE, EnvSpec, TradingEnv, action_templates  # noqa: E402  (after the thread pinning and the path insert)
from training.vec_env import VecTradingEnv  # noqa: E402  (after the thread pinning and the path insert)


class PlainEnv(gym.Env):
    """Same data, same observation and action spaces; reward = template · next-bar return."""

    def __init__(self, env: TradingEnv):
        self.obs = np.stack([env.observation_at(t, 0) for t in range(len(env.panel))])
        c = env.close_ff
        with np.errstate(divide="ignore", invalid="ignore"):
            self.ret = np.nan_to_num(c[1:] / c[:-1] - 1.0)
        self.templates = action_templates(len(env.spec_.symbols))
        self.lo, self.hi, self.len = env.lo, env.hi, env.spec_.episode_len
        self.observation_space, self.action_space = env.observation_space, env.action_space
        self.rng = np.random.default_rng(0)

    def reset(self, *, seed=None, options=None):
        self.t = int(self.rng.integers(self.lo, self.hi - self.len))
        self.end = self.t + self.len
        return self.obs[self.t], {}

    def step(self, a):
        r = float(np.log1p(self.templates[a] @ self.ret[self.t]))
        self.t += 1
        return self.obs[self.t], r, False, self.t >= self.end, {}


def rate(env, steps: int, policy) -> float:
    env.reset(seed=0)
    t0 = time.perf_counter()
    for i in range(steps):
        _, _, term, trunc, _ = env.step(policy(i))
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t0)


def vec_rate(env: VecTradingEnv, steps: int, actions: np.ndarray) -> float:
    """Sub-environment steps per second over `steps` vector steps (autoreset included)."""
    env.reset(seed=0)
    t0 = time.perf_counter()
    for i in range(steps):
        env.step(actions[i])
    return steps * env.num_envs / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--num-envs", type=int, default=256)
    args = ap.parse_args()
    panel = load_panel(symbols=list(DEFAULT_UNIVERSE))
    env = TradingEnv({"panel": panel, "spec": EnvSpec(), "seed": 0})
    plain = PlainEnv(env)
    vec = VecTradingEnv({"panel": panel, "spec": EnvSpec(), "seed": 0}, num_envs=args.num_envs)
    vec_steps = max(args.steps // args.num_envs, 200)
    rng = np.random.default_rng(1)
    rand = rng.integers(0, env.n_actions, size=args.steps)
    vec_rand = rng.integers(0, env.n_actions, size=(vec_steps, args.num_envs))
    vec_hold = np.full((vec_steps, args.num_envs), 2)
    random_vec = 0.0
    for label, policy, vec_actions in (("random actions", lambda i: int(rand[i]), vec_rand),
                                       ("hold one template", lambda i: 2, vec_hold)):
        a = rate(env, args.steps, policy)
        b = rate(plain, args.steps, policy)
        v = vec_rate(vec, vec_steps, vec_actions)
        print(f"{label:18s} TradingEnv {a:9.0f} steps/s   VecTradingEnv({args.num_envs}) {v:10.0f} steps/s   "
              f"plain gymnasium loop {b:9.0f} steps/s   ratio vec/plain {v / b:.3f}   TradingEnv/plain {a / b:.3f}")
        random_vec = random_vec or v
    # the random-action figure: every step trades, the harder case
    print(f"vectorised env: {random_vec:.0f} steps/s (one core)")


if __name__ == "__main__":
    main()
