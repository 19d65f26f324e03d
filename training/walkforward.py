"""Walk-forward evidence: each RL agent vs KOSPI200 buy-and-hold and the technical agent.

    python -m training.walkforward --algos dqn,appo --seeds 3 --iters 8 --tables /tmp/rl_tables.md

For every fold (train → validation → test, rolling forward) and seed, an agent is trained with the
default hyper-parameters for `--iters` RLlib iterations; the iteration with the best validation
Sharpe is kept and then run once, greedily, over the test window through the one accounting
(whole shares, tick grid, next-bar fills, commission, dated sell tax, slippage). The baselines run
over the same test windows: the technical agent through the same accounting (on the RL universe
and on the whole shipped universe), the RL universe held equal-weight, and the KOSPI200 index
bought and held (an index, so no costs). Results are mean ± std over seeds.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from training import algos as A
from training.env import DEFAULT_UNIVERSE, EnvSpec, TradingEnv

FOLDS = [
    {"train_start": "2008-01-01", "train_end": "2014-12-31", "val_start": "2015-01-01", "val_end": "2016-12-31",
     "test_start": "2017-01-01", "test_end": "2018-12-31"},
    {"train_start": "2010-01-01", "train_end": "2016-12-31", "val_start": "2017-01-01", "val_end": "2018-12-31",
     "test_start": "2019-01-01", "test_end": "2020-12-31"},
    {"train_start": "2012-01-01", "train_end": "2018-12-31", "val_start": "2019-01-01", "val_end": "2020-12-31",
     "test_start": "2021-01-01", "test_end": "2023-12-31"},
]


def _metrics(equity: np.ndarray, traded: float) -> dict:
    from backtest.metrics import summary

    m = summary(equity, traded_value=traded)
    return {k: m[k] for k in ("sharpe", "total_return", "max_drawdown", "turnover")}


def run_weights(panel, spec: EnvSpec | dict, start: str, end: str, weight_fn) -> dict:
    """Any weight rule over [start, end] through the env's accounting. weight_fn(t) → weights."""
    env = TradingEnv({"panel": panel, "spec": spec, "eval_window": (start, end)})
    env.reset()
    equity = [env.equity]
    for t in range(env.lo, env.hi):
        fill = env.trade(np.asarray(weight_fn(env, t), dtype=float), t)
        env.traded_value += float(np.sum(fill.notional)) if fill is not None else 0.0
        equity.append(env.mark(t + 1))
    return _metrics(np.array(equity), env.traded_value)


def wf_trial(config: dict, fixed: dict) -> None:
    """Tune trainable: train one (fold, algo, seed), keep the best-validation weights, test them."""
    import copy

    from ray import tune

    from training.tune import evaluate, load_data

    fold, algo_name, seed = FOLDS[config["fold"]], config["algo"], int(config["seed"])
    panel = load_data(fixed["data_dir"], DEFAULT_UNIVERSE, fold["test_end"])
    train_panel = panel.upto(fold["val_end"])  # training and selection never see the test window
    spec = EnvSpec(train_start=fold["train_start"], train_end=fold["train_end"])
    spec_d = TradingEnv({"panel": train_panel, "spec": spec}).spec_.to_dict()
    algo = A.build_config(algo_name, {"panel": train_panel, "spec": spec_d, "seed": seed}, preset=fixed["preset"],
                          seed=seed).build_algo()
    best, best_state, history = -np.inf, None, []
    try:
        for _ in range(int(fixed["iters"])):
            algo.train()
            module = A.learner_module(algo)
            val = evaluate(module, train_panel, spec_d, fold["val_start"], fold["val_end"])
            history.append(val["sharpe"])
            if val["sharpe"] > best:
                best, best_state = val["sharpe"], copy.deepcopy(module.get_state())
        module.set_state(best_state)
        test = evaluate(module, panel, spec_d, fold["test_start"], fold["test_end"])
    finally:
        algo.stop()
    actions = np.bincount(test["actions"], minlength=len(spec_d["symbols"]) + 3)
    tune.report({"val_sharpe": best, "val_history": history, "test_sharpe": test["sharpe"],
                 "test_return": test["total_return"], "test_max_drawdown": test["max_drawdown"],
                 "test_turnover": test["turnover"], "test_action_share": (actions / actions.sum()).tolist()})


def baselines(data_dir: str | None) -> list[dict]:
    from market.data import DataPaths, index_close, load_index, load_panel
    from strategies.technical import TechnicalAgent

    paths = DataPaths(root=Path(data_dir)) if data_dir else DataPaths()
    full = load_panel(paths)
    idx = load_index(paths.path("index"), "KOSPI200")
    out = []
    for k, fold in enumerate(FOLDS):
        spec = EnvSpec(train_start=fold["train_start"], train_end=fold["train_end"])
        small = full.select(DEFAULT_UNIVERSE).upto(fold["test_end"])
        tech = TechnicalAgent()

        def tech_fn(env, t, agent=tech):
            return agent.target_weights(env.panel.rows(t - agent.lookback - 5, t + 1))

        rows = {"technical (RL universe)": run_weights(small, spec, fold["test_start"], fold["test_end"], tech_fn)}
        big = full.upto(fold["test_end"])
        big_spec = EnvSpec(symbols=big.symbols, train_start=fold["train_start"], train_end=fold["train_end"])
        rows["technical (all 105 symbols)"] = run_weights(big, big_spec, fold["test_start"], fold["test_end"], tech_fn)
        ew = np.full(len(DEFAULT_UNIVERSE), 0.98 / len(DEFAULT_UNIVERSE))
        rows["equal weight (RL universe)"] = run_weights(small, spec, fold["test_start"], fold["test_end"],
                                                         lambda env, t, ew=ew: ew)
        # the same span the strategies' equity curves cover: closes of the test window's days
        dates = full.between(fold["test_start"], fold["test_end"]).dates
        kc = index_close(dates, idx)
        kc = kc[np.isfinite(kc)]
        rows["KOSPI200 buy-and-hold (index, no costs)"] = _metrics(kc / kc[0] * 1e8, 0.0)
        for name, m in rows.items():
            out.append({"fold": k, "name": name, **m})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.walkforward", description=__doc__.split("\n\n")[0])
    ap.add_argument("--algos", default="dqn,appo")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--preset", default="2core", choices=sorted(A.PRESETS))
    ap.add_argument("--folds", default="0,1,2")
    ap.add_argument("--data-dir")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--tables", help="also write the markdown tables to this file (stdout always)")
    ap.add_argument("--json", default="reports/rl_walkforward.json")
    ap.add_argument("--storage", default=str(Path(tempfile.gettempdir()) / "krt-wf"), help="Tune results folder")
    ap.add_argument("--from-results", action="store_true",
                    help="do not train: render the report from the trials already finished in --storage")
    ap.add_argument("--no-track", action="store_true",
                    help="do not log the results to MLflow (default: one run per algo, fold and seed in "
                         "experiment walk-forward)")
    args = ap.parse_args(argv)
    if args.from_results:
        t0 = time.time()
        rl = collect(args.storage)
        base = baselines(args.data_dir)
        folds = sorted({r["fold"] for r in rl}) or [int(f) for f in args.folds.split(",")]
        _write(args, base, rl, folds, time.time() - t0)
        return 0

    import ray
    from ray import tune

    from training.tune import _cpus_per_trial, _ray_init

    t0 = time.time()
    base = baselines(args.data_dir)
    _ray_init(None, args.num_cpus)
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    folds = [int(f) for f in args.folds.split(",")]
    rl = []
    for algo in algos:
        per = _cpus_per_trial(algo, args.preset)
        tr = tune.with_resources(tune.with_parameters(wf_trial, fixed={"data_dir": args.data_dir, "preset": args.preset,
                                                                      "iters": args.iters}),
                                 tune.PlacementGroupFactory([{"CPU": 1}] * per))
        tuner = tune.Tuner(tr, param_space={"algo": algo, "fold": tune.grid_search(folds),
                                            "seed": tune.grid_search(list(range(args.seeds)))},
                           tune_config=tune.TuneConfig(max_concurrent_trials=max(1, args.num_cpus // per)),
                           run_config=tune.RunConfig(name=f"walkforward-{algo}", verbose=0,
                                                     storage_path=args.storage))
        for r in tuner.fit():
            if r.error:
                print(f"[walkforward] {algo} trial failed: {r.error}", file=sys.stderr)
                continue
            rl.append({"algo": algo, "fold": r.config["fold"], "seed": r.config["seed"],
                       **{k: r.metrics[k] for k in KEYS}})
    ray.shutdown()
    _write(args, base, rl, folds, time.time() - t0)
    return 0


KEYS = ("val_sharpe", "val_history", "test_sharpe", "test_return", "test_max_drawdown", "test_turnover",
        "test_action_share")


def collect(storage: str) -> list[dict]:
    """Finished (fold, algo, seed) results from the Tune folders under `storage`."""
    rows = []
    for f in sorted(Path(storage).glob("walkforward-*/*/result.json")):
        lines = f.read_text().splitlines()
        if not lines:
            continue
        d = json.loads(lines[-1])
        c = d["config"]
        rows.append({"algo": c["algo"], "fold": c["fold"], "seed": c["seed"], **{k: d[k] for k in KEYS},
                     "time_s": d.get("time_total_s")})
    return rows


def _write(args, base, rl, folds, elapsed) -> None:
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"baselines": base, "rl": rl, "folds": FOLDS, "args": vars(args),
                                           "elapsed_s": elapsed}, indent=1))
    text = render(base, rl, folds, args, elapsed)
    if args.tables:
        Path(args.tables).write_text(text + "\n")
    print(text)
    if not getattr(args, "no_track", False):
        track(args, rl)


def track(args, rl: list[dict]) -> list[str]:
    """One MLflow run per (algo, fold, seed) test result in experiment 'walk-forward', under the
    convention of every tracked run (training/tracking.py): windows, seed, iterations, inputs with
    sha256, costs, git sha; the test and validation numbers; the JSON and tables as artifacts.
    A store that cannot be written is a warning; the report files are already written."""
    from market.data import DataPaths
    from training import tracking as T

    paths = DataPaths(root=Path(args.data_dir)) if args.data_dir else DataPaths()
    files = T.data_paths_files(paths)
    artifacts = [Path(args.json)] + ([Path(args.tables)] if args.tables else [])
    ids = []
    for r in rl:
        fold = FOLDS[int(r["fold"])]
        settings = {"strategy": r["algo"], "algo": r["algo"], "script": "training.walkforward", "fold": r["fold"],
                    **fold, "span": f"{fold['test_start']}..{fold['test_end']}", "seed": r["seed"],
                    "iters": args.iters, "preset": args.preset}
        rec = T.record(T.WALK_FORWARD, f"{r['algo']} fold {r['fold']} seed {r['seed']}", settings=settings,
                       metrics={k: v for k, v in r.items() if k not in ("algo", "fold", "seed")},
                       input_files=files, costs=EnvSpec().costs(), artifacts=artifacts, tags={"strategy": r["algo"]})
        run_id = T.track_run(rec)
        if run_id:
            ids.append(run_id)
    if ids:
        print(f"MLflow: {len(ids)} runs in experiment walk-forward", file=sys.stderr)
    return ids


def render(base, rl, folds, args, elapsed) -> str:
    lines = []
    for k in folds:
        f = FOLDS[k]
        lines.append(f"\n### Fold {k}: train {f['train_start']}..{f['train_end']}, validation {f['val_start']}.."
                     f"{f['val_end']}, test {f['test_start']}..{f['test_end']}\n")
        lines.append("| strategy | Sharpe | total return | max drawdown | turnover (×/yr) |")
        lines.append("|---|---|---|---|---|")
        for algo in sorted({r["algo"] for r in rl}):
            rows = [r for r in rl if r["algo"] == algo and r["fold"] == k]
            if not rows:
                continue
            def ms(key, pct=False, rows=rows):
                v = np.array([r[key] for r in rows])
                return (f"{v.mean():+.1%} ± {v.std():.1%}" if pct else f"{v.mean():.2f} ± {v.std():.2f}")
            lines.append(f"| {algo.upper()} ({len(rows)} seeds) | {ms('test_sharpe')} | {ms('test_return', True)} | "
                         f"{ms('test_max_drawdown', True)} | {ms('test_turnover')} |")
        for b in [b for b in base if b["fold"] == k]:
            lines.append(f"| {b['name']} | {b['sharpe']:.2f} | {b['total_return']:+.1%} | {b['max_drawdown']:+.1%} | "
                         f"{b['turnover']:.2f} |")
    lines.append(f"\n(preset {args.preset}, {args.iters} iterations per run; report step {elapsed / 60:.1f} min)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
