"""reports/rl_exposure.py's training loop keeps the weights that were best on the training window's
last year, reports on schedule, and gives back exactly the kept policy (not the last iteration's)."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_train_and_keep_returns_the_kept_weights_and_reports_on_schedule(ray_local):
    from reports.rl_exposure import sharpe, train_and_keep
    from training import algos as A
    from training.exposure import EXPOSURE_ENV_ID, register_exposure_env, run_policy

    rng = np.random.default_rng(1)
    T = 1600
    returns = np.concatenate([[0.0], rng.normal(0.0003, 0.012, T - 1)])
    z = rng.normal(size=(T, 3)).astype(np.float32)
    base = {"returns": returns, "z": z, "cost_rate": 0.002, "episode_steps": 20}
    envs = {"train": {**base, "window": (0, 1000), "seed": 0}, "select": {**base, "window": (1000, 1250)},
            "val": {**base, "window": (1250, T)}}
    register_exposure_env()
    algo = A.build_config("dqn", envs["train"], preset="smoke", seed=0, env_id=EXPOSURE_ENV_ID).build_algo()
    reports: list[tuple[int, float, float]] = []
    try:
        module, best, val, history, steps = train_and_keep(algo, envs, 1500, report=lambda *r: reports.append(r),
                                                           every=500)
        act = A.greedy_actions(module)
        assert steps >= 1500
        assert round(best, 4) == max(history) and len(history) > 3
        # the module handed back is the kept one: its scores are the kept scores
        assert sharpe(run_policy(envs["select"], act)["equity"]) == best
        assert sharpe(run_policy(envs["val"], act)["equity"]) == val
        # reported every 500 steps or more, and once at the end with the final numbers
        seen = [r[0] for r in reports]
        assert seen == sorted(seen) and all(b - a >= 500 for a, b in zip(seen, seen[1:]))
        assert reports[-1] == (steps, best, val)
        # the kept select Sharpe only rises from report to report
        assert all(b[1] >= a[1] for a, b in zip(reports, reports[1:]))
    finally:
        algo.stop()
