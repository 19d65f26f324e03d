"""APPO training speed: the synchronous learner (training/appo_learner.py) vs RLlib's threaded one.

Same config (the `2core` preset: sampling in the driver, 4 vectorised envs, a local learner), same
seed and data; the peer is what `build_config` used before: RLlib's APPOTorchLearner, whose update
hands each batch to a background thread (with the circular buffer replaying each batch twice).
One warm-up iteration, then `--iters` timed ones; env steps sampled per second of wall time.
Run: /work/main/.venv/bin/python bench/appo_learner.py [--iters 15]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def steps_per_second(threaded: bool, iters: int, panel, spec: dict) -> float:
    from ray.rllib.algorithms.appo.torch.appo_torch_learner import APPOTorchLearner

    from training import algos as A

    cfg = A.build_config("appo", {"panel": panel, "spec": spec, "seed": 0}, preset="2core", seed=0)
    if threaded:
        cfg = cfg.learners(learner_class=APPOTorchLearner).training(use_circular_buffer=True)
    algo = cfg.build_algo()
    try:
        algo.train()  # warm-up: module build, first batches
        t, steps = time.perf_counter(), 0
        for _ in range(iters):
            steps += int(algo.train()["env_runners"]["num_env_steps_sampled"])
        return steps / (time.perf_counter() - t)
    finally:
        algo.stop()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=15)
    args = ap.parse_args(argv)
    import ray

    from market.data import load_panel
    from training.env import DEFAULT_UNIVERSE, EnvSpec, TradingEnv

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    panel = load_panel(symbols=list(DEFAULT_UNIVERSE), start="2008-01-01", end="2016-12-31")
    spec = TradingEnv({"panel": panel, "spec": EnvSpec(train_start="2008-01-02", train_end="2015-12-31")}
                      ).spec_.to_dict()
    sync = steps_per_second(False, args.iters, panel, spec)
    threaded = steps_per_second(True, args.iters, panel, spec)
    print(f"synchronous learner: {sync:.0f} env steps/s")
    print(f"RLlib threaded learner: {threaded:.0f} env steps/s")
    print(f"ratio synchronous/threaded: {sync / threaded:.2f}")


if __name__ == "__main__":
    main()
