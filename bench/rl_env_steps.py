"""Environment steps per second: TradingEnv (the real accounting) vs a plain gymnasium loop.

The peer is the smallest honest trading env over the same data: it indexes precomputed
observations and rewards the template's close-to-close return (no orders, no fills, no costs).
The ratio says what the one accounting (whole shares, tick grid, limits, fees, tax) costs per
step. Run: /work/main/.venv/bin/python bench/rl_env_steps.py [--steps 5000]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from market.data import load_panel  # noqa: E402
from training.env import DEFAULT_UNIVERSE, EnvSpec, TradingEnv, action_templates  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5000)
    args = ap.parse_args()
    panel = load_panel(symbols=list(DEFAULT_UNIVERSE))
    env = TradingEnv({"panel": panel, "spec": EnvSpec(), "seed": 0})
    plain = PlainEnv(env)
    rng = np.random.default_rng(1)
    rand = rng.integers(0, env.n_actions, size=args.steps)
    for label, policy in (("random actions", lambda i: int(rand[i])), ("hold one template", lambda i: 2)):
        a = rate(env, args.steps, policy)
        b = rate(plain, args.steps, policy)
        print(f"{label:18s} TradingEnv {a:9.0f} steps/s   plain gymnasium loop {b:9.0f} steps/s   "
              f"ratio {a / b:.3f}")


if __name__ == "__main__":
    main()
