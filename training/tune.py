"""Hyper-parameter search: Ray Tune + OptunaSearch + ASHA over DQN and APPO, logged to MLflow.

    python -m training.tune --algo dqn,appo --smoke
    ray job submit --working-dir . -- python -m training.tune --algo dqn --ray-address auto

Each trial trains one RLlib algorithm on the training window and, every iteration, runs its greedy
policy once over the validation window through the same accounting; the objective is that
window's net-of-cost Sharpe (`val_sharpe`), never the training reward. ASHA stops weak trials
early. The best `--finalists` configurations are re-trained with `--seeds` seeds; the finalist
with the best mean validation Sharpe wins and its best-seed run is registered as `agent-<algo>`
with alias `challenger`. Every trial is an MLflow run (params, a few metrics per iteration, data
window, git sha, the agent folder as artifact). Interrupted (Ctrl-C, or the process killed)? Run
the same command with `--resume`: finished trials keep their results and are not run again,
unfinished ones continue from their last checkpoint (or start again if they had none), each in
its own MLflow run, and the winner is registered once.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from training import algos as A
from training import registry as R
from training import tracking as T
from training.env import DEFAULT_UNIVERSE, EnvSpec, TradingEnv, run_greedy

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REPORTED = ("val_sharpe", "val_return", "val_max_drawdown", "val_turnover", "episode_return_mean",
            "timesteps")


@dataclass
class Windows:
    train_start: str = "2008-01-01"
    train_end: str = "2016-12-31"
    val_start: str = "2017-01-01"
    val_end: str = "2018-12-31"

    def __post_init__(self):
        if not (self.train_start <= self.train_end < self.val_start <= self.val_end):
            raise ValueError(f"windows must be ordered train_start <= train_end < val_start <= val_end: {self}")


@dataclass
class SearchOptions:
    algos: tuple[str, ...] = ("dqn", "appo")
    preset: str = "2core"
    num_samples: int = 8
    max_iters: int = 20
    finalists: int = 2
    seeds: int = 3
    windows: Windows = field(default_factory=Windows)
    symbols: tuple[str, ...] = DEFAULT_UNIVERSE
    episode_len: int = 120
    storage: str = str(PROJECT_ROOT / "runs" / "tune")
    name: str = "krt"
    mlflow_dir: str = str(R.DEFAULT_DIR)
    experiment: str = R.EXPERIMENT
    data_dir: str | None = None
    resume: bool = False
    checkpoint_every: int = 1
    seed: int = 0
    search_space: dict | None = None  # override for tests: algo -> {param: tune domain}

    @classmethod
    def smoke(cls, **kw) -> "SearchOptions":
        base = dict(preset="smoke", num_samples=2, max_iters=2, finalists=1, seeds=2, episode_len=60)
        return cls(**{**base, **kw})


def search_space(algo: str) -> dict:
    """What Optuna samples for each algorithm (penalties are env parameters, searched too)."""
    from ray import tune

    common = {"lr": tune.loguniform(1e-5, 3e-3), "gamma": tune.uniform(0.9, 0.995),
              "hidden": tune.choice([32, 64, 128]), "layers": tune.choice([1, 2]),
              "turnover_penalty": tune.uniform(0.0, 0.01), "drawdown_penalty": tune.uniform(0.0, 0.5)}
    if algo == "dqn":
        return {**common, "epsilon_final": tune.uniform(0.01, 0.2), "epsilon_steps": tune.choice([2000, 5000, 20000]),
                "n_step": tune.choice([1, 3, 5]), "double_q": tune.choice([True, False]),
                "dueling": tune.choice([True, False]), "prioritized": tune.choice([True, False])}
    return {**common, "entropy_coeff": tune.loguniform(1e-4, 5e-2), "clip_param": tune.uniform(0.1, 0.4),
            "lambda_": tune.uniform(0.8, 1.0)}


ENV_PARAMS = ("turnover_penalty", "drawdown_penalty")


# ------------------------------------------------------------------------------------------------
# evaluation: the validation window through the same accounting
def evaluate(module, panel, spec: dict, start: str, end: str) -> dict:
    """Greedy policy once over [start, end]; net-of-cost metrics of the equity curve."""
    from backtest.metrics import summary
    from training.algos import greedy_policy

    env = TradingEnv({"panel": panel, "spec": spec, "eval_window": (start, end)})
    res = run_greedy(env, greedy_policy(module))
    m = summary(res["equity"], traded_value=res["traded_value"], orders=0)
    return {"sharpe": m["sharpe"], "total_return": m["total_return"], "max_drawdown": m["max_drawdown"],
            "turnover": m["turnover"], "equity": res["equity"], "actions": res["actions"], "dates": res["dates"]}


def data_paths(data_dir: str | None):
    from market.data import DataPaths

    return DataPaths(root=Path(data_dir)) if data_dir else DataPaths()


def load_data(data_dir: str | None, symbols, end: str):
    """The panel up to `end` only: a trial cannot see anything after its validation window."""
    from market.data import load_panel

    return load_panel(data_paths(data_dir), symbols=list(symbols), end=end)


class Interrupted(RuntimeError):
    """A Tune experiment returned before all its trials ended (Ctrl-C): nothing is selected or registered."""


# ------------------------------------------------------------------------------------------------
# one trial
def _existing_run(c, exp_id: str, search_id: str | None, trial_id: str) -> str | None:
    """The MLflow run an earlier attempt of this trial created, if any.

    A trial that restarts without a checkpoint (killed before its first one, or retried by Tune
    after a failure) must not open a second run."""
    if not search_id:
        return None
    runs = c.search_runs([exp_id], filter_string=f"tags.search_id = '{search_id}' and tags.trial_id = '{trial_id}'",
                         max_results=1)
    return runs[0].info.run_id if runs else None


def trial(config: dict, fixed: dict) -> None:
    """Tune function trainable: train, evaluate on validation each iteration, log, checkpoint."""
    import mlflow
    from ray import tune
    from ray.tune import Checkpoint

    algo_name = fixed["algo"]
    w = Windows(**fixed["windows"])
    hp = {k: v for k, v in config.items() if k in A.DEFAULTS[algo_name]}
    env_hp = {k: float(config[k]) for k in ENV_PARAMS if k in config}
    seed = int(config.get("seed", fixed["seed"]))
    panel = load_data(fixed["data_dir"], fixed["symbols"], w.val_end)
    spec = EnvSpec(symbols=tuple(fixed["symbols"]), train_start=w.train_start, train_end=w.train_end,
                   episode_len=int(fixed["episode_len"]), **env_hp)
    spec_d = TradingEnv({"panel": panel, "spec": spec}).spec_.to_dict()  # fits the normaliser once
    algo = A.build_config(algo_name, {"panel": panel, "spec": spec_d, "seed": seed}, hp,
                          preset=fixed["preset"], seed=seed).build_algo()

    ctx = tune.get_context()
    state = {"iteration": 0, "run_id": None}
    ckpt = tune.get_checkpoint()
    if ckpt is not None:  # resumed after an interruption: same weights, same MLflow run
        with ckpt.as_directory() as d:
            algo.restore_from_path(str(Path(d) / "algo"))
            state = json.loads((Path(d) / "state.json").read_text())

    uri = fixed["tracking_uri"]
    exp_id = R.ensure_experiment(uri, fixed["experiment"], fixed["mlflow_dir"])
    c = R.client(uri)
    search_id = config.get("search_id")
    if state["run_id"] is None:
        state["run_id"] = _existing_run(c, exp_id, search_id, ctx.get_trial_id())
    if state["run_id"] is None:
        run = c.create_run(exp_id, run_name=f"{algo_name}-{ctx.get_trial_name()}", tags={
            "algo": algo_name, "trial_id": ctx.get_trial_id(), "code_version": fixed["code_version"],
            "train_window": f"{w.train_start}..{w.train_end}", "val_window": f"{w.val_start}..{w.val_end}",
            "symbols": ",".join(fixed["symbols"]), "preset": fixed["preset"], "search": fixed["search"],
            "search_id": search_id or "", "seed": str(seed)})
        state["run_id"] = run.info.run_id
        params = {**A.hyperparams(algo_name, hp), **env_hp, "seed": seed, "episode_len": spec.episode_len,
                  "preset": fixed["preset"], "git_sha": fixed["code_version"], "blas": T.blas_kernel(),
                  # the one convention of every tracked run (training/tracking.py): inputs with sha256, costs
                  **T.input_file_params(T.data_paths_files(data_paths(fixed["data_dir"]))),
                  **T.costs_params(spec.costs())}
        c.log_batch(state["run_id"], params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()])
    run_id = state["run_id"]
    meta = {"algo": algo_name, "hyperparams": A.hyperparams(algo_name, hp), "env_params": env_hp, "seed": seed,
            "windows": asdict(w), "run_id": run_id, "code_version": fixed["code_version"],
            "data_end": str(panel.date(len(panel) - 1))}  # the last bar the model could have seen
    try:
        for it in range(state["iteration"], int(fixed["max_iters"])):
            result = algo.train()
            module = A.learner_module(algo)
            val = evaluate(module, panel, spec_d, w.val_start, w.val_end)
            ep = result.get("env_runners", {}).get("episode_return_mean")
            metrics = {"val_sharpe": val["sharpe"], "val_return": val["total_return"],
                       "val_max_drawdown": val["max_drawdown"], "val_turnover": val["turnover"],
                       "episode_return_mean": float(ep) if ep is not None and np.isfinite(ep) else float("nan"),
                       "timesteps": float(result.get("num_env_steps_sampled_lifetime", 0))}
            ts = int(time.time() * 1000)
            c.log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, ts, it) for k, v in metrics.items()
                                         if np.isfinite(v)])
            state["iteration"] = it + 1
            last = it + 1 == int(fixed["max_iters"])
            with tempfile.TemporaryDirectory() as d:
                d = Path(d)
                A.save_module(algo, d / "module_tmp")
                R.write_agent_dir(d / R.AGENT_PATH, d / "module_tmp", spec_d, {**meta, "iteration": it + 1,
                                                                              "val": {k: metrics[k] for k in REPORTED[:4]}})
                # the agent as it stands is the run's artifact (ASHA may stop the trial any time)
                c.log_artifacts(run_id, str(d / R.AGENT_PATH), R.AGENT_PATH)
                checkpoint = None
                if last or (it + 1) % max(1, int(fixed["checkpoint_every"])) == 0:
                    algo.save_to_path(str(d / "algo"))
                    (d / "state.json").write_text(json.dumps(state))
                    checkpoint = Checkpoint.from_directory(str(d))
                tune.report({**metrics, "run_id": run_id}, checkpoint=checkpoint)
    finally:
        algo.stop()
    # the run's status (FINISHED/FAILED) is set by the driver once the experiment is over: a trial
    # that ASHA stops never gets here


# ------------------------------------------------------------------------------------------------
# the search
def _ray_init(address: str | None, num_cpus: int | None):
    import ray

    if ray.is_initialized():
        return
    env_vars = {"PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    if address:
        ray.init(address=address, runtime_env={"env_vars": env_vars}, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env_vars})
        from cluster.fate import watch_driver

        watch_driver()  # a SIGKILLed search takes its Ray processes with it


def _cpus_per_trial(algo: str, preset: str) -> int:
    ps = A.PRESETS[preset][algo]
    return 1 + int(ps["num_env_runners"])


def _run_tuner(algo: str, opts: SearchOptions, name: str, param_space: dict, *, search: bool, fixed: dict,
               num_samples: int):
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    cpus = int(ray.cluster_resources().get("CPU", 1))
    per_trial = _cpus_per_trial(algo, opts.preset)
    if per_trial > cpus:
        raise RuntimeError(f"{algo} preset {opts.preset!r} needs {per_trial} CPUs per trial; the cluster has {cpus}")
    resources = tune.PlacementGroupFactory([{"CPU": 1}] * per_trial)
    trainable = tune.with_resources(tune.with_parameters(trial, fixed={**fixed, "search": name}), resources)
    path = str(Path(opts.storage).resolve() / name)
    expected = num_samples * int(np.prod([len(v["grid_search"]) for v in param_space.values()
                                          if isinstance(v, dict) and "grid_search" in v]))
    if opts.resume and tune.Tuner.can_restore(path):
        print(f"[tune] resuming {path}", flush=True)
        # Tune's experiment state holds each trial's status, last result and checkpoint, and the
        # searcher's state: finished trials are kept, the others resume from their checkpoint
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True, restart_errored=False)
        return _finish(tuner.fit(), expected, path, fixed)
    # an id for this experiment, in every trial's config: Tune restores it with the experiment, and
    # it names this experiment's MLflow runs and registered version (the same --name may be reused)
    param_space = {**param_space, "search_id": uuid.uuid4().hex[:12]}
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max(1, opts.max_iters),
                              grace_period=max(1, opts.max_iters // 3), reduction_factor=2) if search else None
    search_alg = OptunaSearch(seed=opts.seed) if search else None
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(metric="val_sharpe", mode="max", num_samples=num_samples,
                                    search_alg=search_alg, scheduler=scheduler,
                                    max_concurrent_trials=max(1, cpus // per_trial)),
        run_config=tune.RunConfig(name=name, storage_path=str(Path(opts.storage).resolve()), verbose=1,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    return _finish(tuner.fit(), expected, path, fixed)


def _search_id_of(results) -> str | None:
    return next((r.config["search_id"] for r in results if r.config and r.config.get("search_id")), None)


def _finish(results, expected: int, path: str, fixed: dict):
    """Refuse a partial experiment, then make MLflow agree with Tune: one ended run per trial."""
    # After Ctrl-C Tune saves its state and returns early, marking the trials it stopped TERMINATED
    # all the same: selecting from them would register a winner of part of the search. A trial has
    # ended if it failed, trained max_iters iterations, or ASHA stopped it (`done` in its last
    # result; a trial that returned gets `done` too, but it is not saved, so not there once restored)
    ended = sum(1 for r in results if r.error or r.metrics.get("done")
                or r.metrics.get("training_iteration", 0) >= int(fixed["max_iters"]))
    if ended < expected:
        raise Interrupted(f"{path}: {ended} of {expected} trials ended; run the same command with --resume "
                          "to continue")
    sid = _search_id_of(results)
    if not sid:  # an experiment started before search ids existed
        return results
    reported = {r.metrics["trial_id"]: r for r in results}
    c = R.client(fixed["tracking_uri"])
    exp_id = R.ensure_experiment(fixed["tracking_uri"], fixed["experiment"], fixed["mlflow_dir"])
    for run in c.search_runs([exp_id], filter_string=f"tags.search_id = '{sid}'", max_results=50_000):
        r = reported.get(run.data.tags.get("trial_id"))
        own = r is not None and r.metrics.get("run_id") in (None, run.info.run_id)
        if not own:
            # no trial reports this run: one the driver started but had not saved in its experiment
            # state yet when it was killed (on --resume the searcher samples a new trial instead)
            c.set_tag(run.info.run_id, "deleted_reason",
                      "no trial of the Tune experiment reports this run (lost when the search was killed, "
                      "re-sampled on --resume)")
            c.delete_run(run.info.run_id)
        elif run.info.status == "RUNNING":
            c.set_terminated(run.info.run_id, "FAILED" if r.error else "FINISHED")
    return results


def search(algo: str, opts: SearchOptions) -> dict:
    """Search one algorithm, re-run finalists over seeds, register the winner as challenger."""
    A.check_algo(algo)
    uri = R.tracking_uri(opts.mlflow_dir)
    R.ensure_experiment(uri, opts.experiment, opts.mlflow_dir)
    fixed = {"algo": algo, "windows": asdict(opts.windows), "symbols": list(opts.symbols), "preset": opts.preset,
             "episode_len": opts.episode_len, "max_iters": opts.max_iters, "data_dir": opts.data_dir,
             "tracking_uri": uri, "experiment": opts.experiment, "mlflow_dir": str(opts.mlflow_dir),
             "seed": opts.seed, "checkpoint_every": opts.checkpoint_every, "code_version": R.git_sha()}
    space = (opts.search_space or {}).get(algo) or search_space(algo)
    results = _run_tuner(algo, opts, f"{opts.name}-{algo}-search", space, search=True, fixed=fixed,
                         num_samples=opts.num_samples)
    sid = _search_id_of(results)
    rows = []
    for r in results:
        if r.error or not r.metrics or "val_sharpe" not in r.metrics:
            continue
        rows.append({"config": {k: v for k, v in r.config.items() if k in space}, "val_sharpe": r.metrics["val_sharpe"],
                     "run_id": r.metrics["run_id"], "seed": opts.seed})
    if not rows:
        raise RuntimeError(f"every {algo} trial failed; see {opts.storage}/{opts.name}-{algo}-search")
    rows.sort(key=lambda x: -x["val_sharpe"])
    finalists = rows[: max(1, opts.finalists)]

    # several seeds for the finalists: the search seed is one, the others are fresh trials
    from ray import tune

    scored = []
    extra_seeds = [opts.seed + s for s in range(1, max(1, opts.seeds))]
    for i, fin in enumerate(finalists):
        seed_rows = [fin]
        if extra_seeds:
            space_i = {**fin["config"], "seed": tune.grid_search(extra_seeds)}
            # named after the search: --resume must not restore another search's finalists
            name = f"{opts.name}-{algo}-finalist{i}" + (f"-{sid}" if sid else "")
            res = _run_tuner(algo, opts, name, space_i, search=False, fixed=fixed, num_samples=1)
            for r in res:
                if not r.error and r.metrics and "val_sharpe" in r.metrics:
                    seed_rows.append({"config": fin["config"], "val_sharpe": r.metrics["val_sharpe"],
                                      "run_id": r.metrics["run_id"], "seed": r.config["seed"]})
        sh = np.array([s["val_sharpe"] for s in seed_rows])
        scored.append({"config": fin["config"], "mean": float(sh.mean()), "std": float(sh.std()),
                       "seeds": seed_rows})
    scored.sort(key=lambda x: -x["mean"])
    best = scored[0]
    best_run = max(best["seeds"], key=lambda s: s["val_sharpe"])
    w = opts.windows
    desc = (f"{algo.upper()} challenger: validation ({w.val_start}..{w.val_end}) net-of-cost Sharpe "
            f"{best['mean']:.3f} ± {best['std']:.3f} over {len(best['seeds'])} seeds; this version is seed "
            f"{best_run['seed']} (Sharpe {best_run['val_sharpe']:.3f}); trained on {w.train_start}..{w.train_end}.")
    # a --resume after this search had registered its winner (killed later, e.g. during the next
    # --algo) finds that version instead of registering the same winner again
    version = R.version_with_tag(uri, algo, "search_id", sid) if sid else None
    if version is not None:
        print(f"[tune] {algo}: this search's winner is already {R.model_name(algo)} v{version}", flush=True)
    else:
        version = R.register(uri, algo, best_run["run_id"], desc, tags={
            "val_sharpe_mean": f"{best['mean']:.4f}", "val_sharpe_std": f"{best['std']:.4f}",
            "val_sharpe": f"{best_run['val_sharpe']:.4f}", "seeds": len(best["seeds"]), "val_end": w.val_end,
            "train_window": f"{w.train_start}..{w.train_end}", "code_version": fixed["code_version"],
            "search_id": sid or ""})
        print(f"[tune] {algo}: registered {R.model_name(algo)} v{version} as challenger — {desc}", flush=True)
    out = {"algo": algo, "model": R.model_name(algo), "version": version, "alias": R.CHALLENGER,
           "run_id": best_run["run_id"], "val_sharpe_mean": best["mean"], "val_sharpe_std": best["std"],
           "config": best["config"], "trials": len(rows), "tracking_uri": uri}
    return out


def run(opts: SearchOptions, address: str | None = None, num_cpus: int | None = None) -> list[dict]:
    _ray_init(address, num_cpus)
    return [search(a, opts) for a in opts.algos]


# ------------------------------------------------------------------------------------------------
# command line (shared with `trader train`)
def add_arguments(p: argparse.ArgumentParser) -> None:
    d = SearchOptions()
    p.add_argument("--algo", default="dqn,appo",
                   help="comma-separated: dqn, appo, lgbm (the LightGBM forecaster: training/forecasters.py)")
    p.add_argument("--smoke", action="store_true", help="a tiny but complete search (minutes on 2 cores)")
    p.add_argument("--preset", choices=sorted(A.PRESETS), help=f"resources per trial (default {d.preset})")
    p.add_argument("--num-samples", "--trials", dest="num_samples", type=int,
                   help="Optuna trials per algorithm (lgbm: default 6, the first 3 its default grid; 10-20 s each on the shipped data)")
    p.add_argument("--fit-date", default="2017-01-01",
                   help="lgbm: validated on the year before and fitted on every bar before this date")
    p.add_argument("--max-iters", type=int, help="training iterations per trial (ASHA's max_t)")
    p.add_argument("--finalists", type=int, help="best configs re-run over seeds")
    p.add_argument("--seeds", type=int, help="seeds per finalist (including the search's)")
    for f in ("train_start", "train_end", "val_start", "val_end"):
        p.add_argument("--" + f.replace("_", "-"), help=f"YYYY-MM-DD (default {getattr(d.windows, f)})")
    p.add_argument("--symbols", help=f"comma-separated universe (default {','.join(d.symbols)})")
    p.add_argument("--episode-len", type=int)
    p.add_argument("--storage", default=d.storage, help="Tune results folder (resume reads it)")
    p.add_argument("--name", default=d.name, help="experiment name prefix in --storage")
    p.add_argument("--mlflow-dir", default=d.mlflow_dir, help="embedded MLflow store (MLFLOW_TRACKING_URI wins)")
    p.add_argument("--data-dir", help="data folder (default KRT_DATA_DIR or data/)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted search (same arguments): finished trials are kept, unfinished "
                        "ones continue from their last checkpoint, the winner is registered once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"),
                   help="join a running cluster ('auto' inside `ray job submit`); default: a local Ray")
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray (default: all)")
    p.add_argument("--json", help="write the registered versions as JSON to this file")


def _algos(args) -> tuple[str, ...]:
    return tuple(a.strip().lower() for a in args.algo.split(",") if a.strip())


def options_from_args(args) -> SearchOptions:
    algos = tuple(a for a in _algos(args) if a not in R.FORECASTERS)
    for a in algos:
        A.check_algo(a)
    kw = {k: v for k, v in dict(preset=args.preset, num_samples=args.num_samples, max_iters=args.max_iters,
                                finalists=args.finalists, seeds=args.seeds, episode_len=args.episode_len).items()
          if v is not None}
    wd = asdict(Windows())
    for f in wd:
        if getattr(args, f) is not None:
            wd[f] = getattr(args, f)
    kw.update(algos=algos, windows=Windows(**wd), storage=args.storage, name=args.name,
              mlflow_dir=args.mlflow_dir, data_dir=args.data_dir, resume=args.resume, seed=args.seed)
    if args.symbols:
        kw["symbols"] = tuple(s.strip() for s in args.symbols.split(",") if s.strip())
    return SearchOptions.smoke(**kw) if args.smoke else SearchOptions(**kw)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.tune", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    return run_from_args(args)


def forecast_options_from_args(args, model: str):
    from training.forecasters import DEFAULT_TRIALS, ForecastSearchOptions

    kw: dict = dict(model=model, fit_date=args.fit_date, trials=args.num_samples or DEFAULT_TRIALS, seed=args.seed,
                    data_dir=args.data_dir, mlflow_dir=args.mlflow_dir, storage=args.storage, name=args.name)
    if args.symbols:
        kw["symbols"] = tuple(s.strip() for s in args.symbols.split(",") if s.strip())
    return ForecastSearchOptions(**kw)


def run_from_args(args) -> int:
    forecasters = [a for a in _algos(args) if a in R.FORECASTERS]
    opts = options_from_args(args)
    out: list[dict] = []
    try:
        if opts.algos:
            out = run(opts, address=args.ray_address, num_cpus=args.num_cpus)
        if forecasters:
            from training.forecasters import search as forecast_search

            _ray_init(args.ray_address, args.num_cpus)
            out += [forecast_search(forecast_options_from_args(args, m)) for m in forecasters]
    except Interrupted as e:
        print(f"[tune] interrupted: {e}", file=sys.stderr, flush=True)
        return 130
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    for o in out:
        score = (f"val Rank IC {o['val_rank_ic']:.4f}" if "val_rank_ic" in o else
                 f"val Sharpe {o['val_sharpe_mean']:.3f} ± {o['val_sharpe_std']:.3f}")
        print(f"{o['model']} v{o['version']} @challenger  {score}  ({o['tracking_uri']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
