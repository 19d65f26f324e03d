"""Training scaling on Ray as CPUs grow: Tune trials per hour and RLlib sampling throughput.

    /work/main/.venv/bin/python bench/scaling_training.py [--cpus 1,2] [--trials 8] [--steps 4000]
        [--rl-trials 4] [--rl-steps 20000] [--only tune|rllib|rl]

Each CPU count runs in a fresh Ray (a subprocess, `ray.init(num_cpus=N)`), and the result is
printed as a ratio against the 1-CPU run measured in the same invocation.

- Tune: trials are real project work — a Ray Tune grid over the technical agent's parameters,
  each trial a backtest through the one accounting (`orders_for_targets` + `execute` via the
  PaperBroker) — 1 CPU per trial, so N CPUs run N trials at a time.
- RLlib: the project's APPO (training/algos.py) with N env runners (1 per CPU) sampling the
  project's TradingEnv (training/env.py: the one accounting per step, 5 symbols, 2008-2016 training
  window), measured with RLlib's own `synchronous_parallel_sample`.
- RL trials: whole RL training runs as Tune trials, 1 CPU each — the exposure controller's DQN and
  APPO (reports/rl_exposure.py: fold 0's training window, the 2core preset, the greedy policy
  scored on the window's last year after every iteration), `--rl-steps` env steps per trial: RL
  trials per hour, and env steps trained per second over all trials at once.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# --- Tune: backtests of the technical agent -------------------------------------------------------
def backtest_trial(config: dict) -> dict:
    import numpy as np

    from backtest.metrics import summary
    from broker.base import OrderRequest, Side
    from broker.paper import PaperBroker
    from market.accounting import BUY, orders_for_targets
    from market.data import load_panel
    from strategies.technical import TechnicalAgent

    panel = load_panel(symbols=["005930", "000660", "035420", "005380", "051910", "006400", "035720",
                                "068270"], start="2021-01-01", end="2023-12-28")
    agent = TechnicalAgent(short_window=config["short"], long_window=config["long"], top_k=config["top_k"])
    broker = PaperBroker(100_000_000)
    equity = []
    for t in range(agent.lookback, len(panel)):
        day = panel.date(t)
        bars = {s: tuple(float(getattr(panel, f)[t, j]) for f in ("open", "high", "low", "close"))
                for j, s in enumerate(panel.symbols) if np.isfinite(panel.close[t, j])}
        broker.on_bar(day, bars)
        w = agent.target_weights(panel.rows(t + 1 - agent.lookback, t + 1))
        hold = np.array([broker.positions().get(s, 0) for s in panel.symbols])
        for k, (i, sd, q) in enumerate(zip(*orders_for_targets(w, hold, broker.cash(), panel.close[t]))):
            broker.submit(OrderRequest(f"{day}-{k}", panel.symbols[i], Side.BUY if sd == BUY else Side.SELL, int(q)))
        equity.append(broker.mark_to_market())
    return {"sharpe": summary(np.array(equity))["sharpe"]}


def tune_run(cpus: int, trials: int) -> dict:
    import ray
    from ray import tune

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    grid = [{"short": s, "long": lg, "top_k": k} for s in (10, 20) for lg in (60, 120) for k in (3, 5)][:trials]
    space = {"cfg": tune.grid_search(grid)}
    trainable = tune.with_resources(lambda c: backtest_trial(c["cfg"]), {"cpu": 1})
    t0 = time.perf_counter()
    results = tune.Tuner(trainable, param_space=space,
                         run_config=tune.RunConfig(storage_path=f"/tmp/krt-bench-tune-{os.getpid()}",
                                                   verbose=0)).fit()
    seconds = time.perf_counter() - t0
    ok = sum(1 for r in results if r.error is None)
    ray.shutdown()
    return {"trials": ok, "seconds": seconds, "trials_per_hour": ok / seconds * 3600}


# --- RLlib: env-runner sampling throughput -------------------------------------------------------
def rllib_run(cpus: int, steps: int) -> dict:
    import ray
    from ray.rllib.execution.rollout_ops import synchronous_parallel_sample

    from market.data import load_panel
    from training.algos import build_config
    from training.env import DEFAULT_UNIVERSE, EnvSpec, TradingEnv

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    panel = load_panel(symbols=list(DEFAULT_UNIVERSE), end="2016-12-31")
    spec = TradingEnv({"panel": panel, "spec": EnvSpec(symbols=DEFAULT_UNIVERSE, train_start="2008-01-01",
                                                       train_end="2016-12-31")}).spec_.to_dict()
    config = (build_config("appo", {"panel": panel, "spec": spec, "seed": 0})
              .env_runners(num_env_runners=cpus, num_envs_per_env_runner=4, num_cpus_per_env_runner=1))
    algo = config.build_algo()

    def sample(n: int) -> int:
        batches = synchronous_parallel_sample(worker_set=algo.env_runner_group, max_env_steps=n, concat=False,
                                              _uses_new_env_runners=True)
        return sum(e.env_steps() for batch in batches for e in batch)

    sample(800)  # warm-up: runners built, env data loaded
    t0 = time.perf_counter()
    sampled = 0
    while sampled < steps:
        sampled += sample(steps - sampled)
    seconds = time.perf_counter() - t0
    algo.stop()
    ray.shutdown()
    return {"env": "TradingEnv (5 symbols, APPO runners)", "steps": sampled, "seconds": seconds,
            "steps_per_s": sampled / seconds}


# --- RL trials: the exposure controller trained as Tune trials -----------------------------------
def exposure_inputs() -> Path:
    """Where the controller's inputs (the default ensemble's book 2006–2023 through the engine) are
    cached: one file per code version and data, so a new default or new data is built afresh
    instead of read stale."""
    import hashlib
    import tempfile

    from market.data import DataPaths
    from training import registry as R
    from training import tracking as T

    digests = T.input_file_params(T.data_paths_files(DataPaths()))
    key = hashlib.sha256(json.dumps([R.git_sha(), digests], sort_keys=True).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"krt-bench-exposure-inputs-{key}.npz"


def controller_trial(config: dict) -> dict:
    import numpy as np

    from reports.rl_exposure import fold_configs, train_and_keep
    from training.algos import build_config
    from training.exposure import EXPOSURE_ENV_ID, register_exposure_env
    from training.walkforward import FOLDS

    envs = fold_configs(np.load(config["inputs"]), FOLDS[0], 0.0, config["seed"])
    register_exposure_env()
    algo = build_config(config["algo"], envs["train"], preset="2core", seed=config["seed"],
                        env_id=EXPOSURE_ENV_ID).build_algo()
    try:
        steps = train_and_keep(algo, envs, config["steps"])[-1]
    finally:
        algo.stop()
    return {"steps": steps}


def rl_trials_run(cpus: int, trials: int, steps: int) -> dict:
    import ray
    from ray import tune

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    out = {}
    inputs = str(exposure_inputs())  # hashes the data files and asks git: once, not per algorithm
    for algo in ("dqn", "appo"):
        space = {"algo": algo, "inputs": inputs, "steps": steps, "seed": tune.grid_search(list(range(trials)))}
        t0 = time.perf_counter()
        results = tune.Tuner(tune.with_resources(controller_trial, {"cpu": 1}), param_space=space,
                             tune_config=tune.TuneConfig(max_concurrent_trials=cpus),
                             run_config=tune.RunConfig(storage_path=f"/tmp/krt-bench-rl-{os.getpid()}",
                                                       verbose=0)).fit()
        seconds = time.perf_counter() - t0
        errors = [r.error for r in results if r.error]
        if errors:
            raise RuntimeError(f"{algo} trial failed: {errors[0]}")
        trained = sum(int(r.metrics["steps"]) for r in results)
        out[algo] = {"trials": len(results), "seconds": seconds, "trials_per_hour": len(results) / seconds * 3600,
                     "steps_per_s": trained / seconds}
    ray.shutdown()
    return out


def child(kind: str, cpus: int, n: int, steps: int) -> None:
    out = tune_run(cpus, n) if kind == "tune" else rllib_run(cpus, n) if kind == "rllib" else rl_trials_run(cpus, n, steps)
    print("RESULT " + json.dumps(out), flush=True)


def measure(kind: str, cpus: int, n: int, steps: int = 0) -> dict:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, __file__, "--child", kind, "--cpus", str(cpus), "--n", str(n),
                        "--rl-steps", str(steps)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{kind} with {cpus} CPU(s) failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return json.loads(line[7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpus", default="1,2")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--rl-trials", type=int, default=4, help="RL trials per algorithm and CPU count")
    ap.add_argument("--rl-steps", type=int, default=20_000, help="env steps per RL trial")
    ap.add_argument("--only", choices=["tune", "rllib", "rl"], help="measure one part only")
    ap.add_argument("--child", choices=["tune", "rllib", "rl"])
    ap.add_argument("--n", type=int)
    args = ap.parse_args()
    cpus = [int(c) for c in str(args.cpus).split(",")]
    if args.child:
        child(args.child, cpus[0], args.n, args.rl_steps)
        return
    print(f"machine: {os.cpu_count()} cores (shared; expect noise)")
    base = None
    for c in cpus if args.only in (None, "tune") else []:
        r = measure("tune", c, args.trials)
        base = base or r["trials_per_hour"]
        print(f"Tune  {c} CPU(s): {r['trials']} backtest trials in {r['seconds']:.1f} s = "
              f"{r['trials_per_hour']:.0f} trials/h  (x{r['trials_per_hour'] / base:.2f} vs 1 CPU)")
    base = None
    for c in cpus if args.only in (None, "rllib") else []:
        r = measure("rllib", c, args.steps)
        base = base or r["steps_per_s"]
        print(f"RLlib {c} env runner(s)/CPU(s): {r['steps']} env steps in {r['seconds']:.1f} s = "
              f"{r['steps_per_s']:.0f} steps/s  (x{r['steps_per_s'] / base:.2f} vs 1 CPU) [{r['env']}]")

    if args.only not in (None, "rl"):
        return
    inputs = exposure_inputs()
    if not inputs.exists():  # built once per code version and data (~15 s)
        from market.data import DataPaths
        from reports.rl_exposure import build_inputs

        build_inputs(DataPaths(), inputs)
    base_rl: dict = {}
    for c in cpus:
        r = measure("rl", c, args.rl_trials, args.rl_steps)
        for algo, m in r.items():
            b = base_rl.setdefault(algo, m)
            print(f"RL trials {c} CPU(s): {m['trials']} {algo.upper()} exposure-controller trials of {args.rl_steps} "
                  f"env steps in {m['seconds']:.1f} s = {m['trials_per_hour']:.0f} trials/h, {m['steps_per_s']:.0f} "
                  f"env steps/s trained  (x{m['trials_per_hour'] / b['trials_per_hour']:.2f} vs 1 CPU)")


if __name__ == "__main__":
    main()
