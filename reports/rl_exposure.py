"""RL as the ensemble's exposure controller, walk-forward (issue 12, items 3 and 5).

    /work/main/.venv/bin/python -m reports.rl_exposure [--seeds 5] [--steps 1000000] [--report-only]
    /work/main/.venv/bin/python -m reports.rl_exposure --search [--trials 16] [--max-steps 1000000]
    /work/main/.venv/bin/python -m reports.rl_exposure --from-search reports/rl_exposure_search.json --algos dqn

The book: the default ensemble (strategies/defaults.py) traded by the backtest engine as ONE
continuous account 2006-01-02 → 2023-12-28, fitted on the rows before 2006 (next-bar fills,
commission, dated sell tax, slippage, trades under 200k KRW skipped). Its daily returns at full
exposure are what training/exposure.py's ExposureEnv scales; its market features are KOSPI200's
trend, volatility and drawdown, breadth and the HMM regime (each row from bars <= its date).

Per fold (training/walkforward.py's FOLDS: 7 training years, 2 validation years, the test years
after), algorithm (DQN, APPO: RLlib, the 2core preset) and reward (drawdown penalty 0 or 1), and
seed: train `--steps` env steps on the training window but its last year (the normaliser fitted
on the whole training window); after each iteration the greedy policy runs once over that last
year in the env, and the iteration with the best Sharpe there is kept; the kept policy then runs
once over the validation window. The (algorithm, reward) with the best mean validation Sharpe
over seeds is the fold's choice. Its test
numbers come from the real engine: `ExposureControlled` (the ensemble's targets × the policy's
level) from 2006 to the test end, uncontrolled until the test start, measured over the test window.

The rule for the default (item 5): the controller enters the default ensemble only if the chosen
configuration's mean validation Sharpe beats the uncontrolled book's on every fold.
Results are kept in reports/rl_exposure.json; `--report-only` rewrites the section from it.

`--search` (item 4) searches each algorithm's hyper-parameters and drawdown penalty instead: Ray
Tune with OptunaSearch and ASHA, on fold 0 only (its validation window ends before every test
window), the objective the kept weights' validation Sharpe; results in rl_exposure_search.json.
`--from-search` then runs the walk-forward above with each algorithm's chosen configuration.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from backtest.engine import BacktestConfig
from training.exposure import run_policy
from training.walkforward import FOLDS

ROOT = Path(__file__).resolve().parent
BOOK_START, END = "2006-01-02", "2023-12-28"
CONFIGS = [("dqn", 0.0), ("dqn", 1.0), ("appo", 0.0), ("appo", 1.0)]  # (algorithm, drawdown penalty)
BACKTEST = BacktestConfig(min_trade_value=200_000)
SECTION = "## RL as the exposure controller"
SEARCHED_SECTION = "## The exposure controller with the searched configurations"
# reward: −this × the traded share of equity, on top of the cost the env charges (fixed before the
# run, not searched: a level change should pay for itself twice over, so the policy does not churn)
TURNOVER_PENALTY = 0.005
# the iteration a run keeps is the best on the training window's last year, not on validation: a
# maximum over ~100 evaluations of one window overstates that window (the first run of this report
# kept the best validation iteration and compared that maximum with the book's single validation
# number; see reports/rl.md)
SELECT_BARS = 250


def _ensemble(paths):
    from strategies.ensemble import EnsembleAgent
    from strategies.factors import FactorEngine
    from strategies.fundamentals import Fundamentals, MarketCaps
    from strategies.regime import RegimeDetector, RegimeSource
    from strategies.registry import ensemble_members

    engine = FactorEngine(Fundamentals.load(paths), MarketCaps.load(paths))
    regime = RegimeSource.load(paths, "KOSPI200", RegimeDetector(seed=0), end=END)
    return lambda: EnsembleAgent(ensemble_members(engine, regime), regime=regime), regime


def build_inputs(paths, out: Path) -> Path:
    """The book's daily returns and costs, the market features, saved for the trials."""
    from backtest.engine import run_backtest
    from market.data import index_close, load_index, load_panel
    from training.exposure import market_state

    panel = load_panel(paths, end=END)
    make, regime = _ensemble(paths)
    res = run_backtest(make(), panel, BOOK_START, END, BACKTEST)
    pd = panel.dates.astype("datetime64[D]")
    probs = np.array([[np.nan] * 3 if (p := regime.probs_at(d)) is None else [p["bull"], p["bear"], p["sideways"]]
                      for d in pd])
    x = market_state(index_close(pd, load_index(paths.path("index"), "KOSPI200")), panel.close, probs)
    rows = np.searchsorted(pd, res.dates.astype("datetime64[D]"))
    # slippage the engine charged, KRW per day: |fill price − the bar's open| × shares (the fees are
    # in res.costs; slippage is in the fill prices only)
    f = res.fills
    col = {s: i for i, s in enumerate(panel.symbols)}
    ti = np.searchsorted(pd, f["date"].to_numpy().astype("datetime64[D]"))
    si = np.array([col[s] for s in f["symbol"]], dtype=np.int64)
    krw = np.abs(f["price"].to_numpy().astype(float) - panel.open[ti, si]) * f["qty"].to_numpy().astype(float)
    slippage = np.bincount(np.searchsorted(res.dates.astype("datetime64[D]"), pd[ti]), weights=krw,
                           minlength=len(res.dates))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, dates=res.dates.astype("datetime64[D]").astype(str), equity=res.equity,
             fees=res.costs, slippage=slippage, traded=res.traded_value, x=x[rows])
    return out


def fold_configs(data, fold: dict, drawdown_penalty: float, seed: int) -> dict[str, dict]:
    """ExposureEnv configs of one fold: train (random episodes), select (the training window's last
    year), validation and test (one episode each)."""
    from training.env import Normaliser

    dates = data["dates"].astype("datetime64[D]")
    eq = data["equity"]
    r = np.concatenate([[0.0], eq[1:] / eq[:-1] - 1.0])

    def row(day):
        return int(np.searchsorted(dates, np.datetime64(day, "D")))

    def after(day):  # the first row after `day`
        return int(np.searchsorted(dates, np.datetime64(day, "D"), side="right"))

    lo, hi = row(fold["train_start"]), after(fold["train_end"])
    sel = hi - SELECT_BARS  # the training window's last year picks the iteration; episodes end before it
    # the cost of scaling the book: what the engine charged it per traded won on the training rows
    # (fees and tax, plus the slippage in its fill prices)
    cost_rate = float((data["fees"][lo:hi].sum() + data["slippage"][lo:hi].sum()) / data["traded"][lo:hi].sum())
    z = Normaliser.fit(data["x"][lo:hi]).apply(data["x"]).astype(np.float32)
    base = {"returns": r, "z": z, "cost_rate": cost_rate, "drawdown_penalty": drawdown_penalty,
            "turnover_penalty": TURNOVER_PENALTY}
    val, test = (row(fold["val_start"]), after(fold["val_end"])), (row(fold["test_start"]), after(fold["test_end"]))
    return {"train": {**base, "window": (lo, sel), "seed": seed}, "select": {**base, "window": (sel, hi)},
            "val": {**base, "window": val},
            "test": {**base, "window": test}}


def sharpe(equity: np.ndarray) -> float:
    from backtest.metrics import summary

    return float(summary(np.asarray(equity) * 1e8)["sharpe"])


def summary_from(bt, start: str) -> dict:
    """Metrics of a backtest's account from `start` on: equity from the close before `start`, the
    trades made from `start`."""
    from backtest.metrics import summary

    first = int(np.searchsorted(bt.dates.astype("datetime64[D]"), np.datetime64(start, "D"))) - 1
    return summary(bt.equity[first:], traded_value=float(bt.traded_value[first + 1:].sum()))


def train_and_keep(algo, envs: dict, steps: int, report=None, every: int = 0):
    """Train `algo` until `steps` env steps; after each iteration the greedy policy runs once over
    the training window's last year (envs["select"]) and the best iteration's weights are kept. The
    kept weights' validation Sharpe is measured when they are kept (it never picks them).

    `report(steps, select_sharpe, val_sharpe)` is called every `every` steps and at the end.
    Returns (module with the kept weights, their select Sharpe, their validation Sharpe, the select
    Sharpe of every iteration, steps)."""
    from training import algos as A

    best, best_state, best_val, history, n, due = -np.inf, None, float("nan"), [], 0, every
    while n < steps:
        res = algo.train()
        n = int(res["env_runners"]["num_env_steps_sampled_lifetime"])
        module = A.learner_module(algo)
        act = A.greedy_actions(module)
        sel = sharpe(run_policy(envs["select"], act)["equity"])
        history.append(round(sel, 4))
        if sel > best:
            best, best_state = sel, copy.deepcopy(module.get_state())
            best_val = sharpe(run_policy(envs["val"], act)["equity"])
        if report is not None and (n >= due or n >= steps):
            report(n, best, best_val)
            due = n + every
    module.set_state(best_state)
    return module, best, best_val, history, n


def trial(config: dict) -> None:
    """Tune trainable: train one (fold, algorithm, reward, seed); test the policy it keeps."""
    from ray import tune

    from backtest.engine import run_backtest
    from market.data import DataPaths, load_panel
    from training import algos as A
    from training.exposure import EXPOSURE_ENV_ID, ExposureControlled, register_exposure_env

    data = np.load(config["inputs"])
    fold = FOLDS[config["fold"]]
    seed = int(config["seed"])
    envs = fold_configs(data, fold, float(config["drawdown_penalty"]), seed)
    register_exposure_env()
    algo = A.build_config(config["algo"], envs["train"], config.get("hp"), preset="2core", seed=seed,
                          env_id=EXPOSURE_ENV_ID).build_algo()
    t0 = time.time()
    try:
        module, best, val, history, steps = train_and_keep(algo, envs, int(config["steps"]))
        train_s = time.time() - t0
        act = A.greedy_actions(module)
        env_test = run_policy(envs["test"], act)
        paths = DataPaths(root=Path(config["data_dir"])) if config.get("data_dir") else DataPaths()
        make, _ = _ensemble(paths)
        panel = load_panel(paths, end=fold["test_end"])
        dates = data["dates"].astype("datetime64[D]")
        agent = ExposureControlled(make(), dates, envs["test"]["z"], act, active_from=fold["test_start"])
        bt = run_backtest(agent, panel, BOOK_START, fold["test_end"], BACKTEST)
    finally:
        algo.stop()
    m = summary_from(bt, fold["test_start"])
    levels = np.array([lv for _, lv in agent.levels])
    tune.report({"val_sharpe": val, "select_sharpe": best, "select_history": history, "steps": steps, "train_s": train_s,
                 "env_test_sharpe": sharpe(env_test["equity"]),
                 "test_sharpe": m["sharpe"], "test_annual": m["annual_return"], "test_mdd": m["max_drawdown"],
                 "test_turnover": m["turnover"], "test_mean_level": float(levels.mean()),
                 "test_level_changes": int((np.diff(levels) != 0).sum()), "cost_rate": envs["train"]["cost_rate"]})


def baselines(paths, data) -> dict:
    """Per fold: the book itself (the ensemble without the controller), a one-line exposure rule
    (half in the book while KOSPI200 is below its 200-bar mean, the classic trend filter) through
    the same ExposureControlled, equal weight monthly and KOSPI200 over the test window; the book's
    and the rule's validation Sharpe in the env."""
    from backtest.engine import run_backtest
    from backtest.metrics import summary
    from market.data import index_close, load_index, load_panel
    from strategies.baselines import EqualWeightRebalanced
    from training.exposure import FEATURES, LEVELS, ExposureControlled

    dates = data["dates"].astype("datetime64[D]")
    panel = load_panel(paths, end=END)
    idx = load_index(paths.path("index"), "KOSPI200")
    full = np.full((1,), len(LEVELS) - 1)
    gap = FEATURES.index("gap_ma200")

    def rule(obs):  # fed the raw features (not standardised): the gap's sign is the rule
        return np.array([len(LEVELS) - 1 if obs[0, gap] >= 0 else LEVELS.index(0.5)])

    make, _ = _ensemble(paths)
    raw = np.nan_to_num(data["x"])
    out = {}
    for k, fold in enumerate(FOLDS):
        envs = fold_configs(data, fold, 0.0, 0)
        a, b = envs["test"]["window"]
        book = data["equity"][a - 1:b]
        ew = run_backtest(EqualWeightRebalanced(), panel, fold["test_start"], fold["test_end"], BACKTEST)
        ruled = run_backtest(ExposureControlled(make(), dates, raw, rule, active_from=fold["test_start"]),
                             panel.upto(fold["test_end"]), BOOK_START, fold["test_end"], BACKTEST)
        kc = index_close(dates[a - 1:b], idx)
        rows = {"ensemble without controller (the book)": summary(book, traded_value=float(data["traded"][a:b].sum())),
                "rule: half in the book below KOSPI200's 200-bar mean": summary_from(ruled, fold["test_start"]),
                "equal weight, monthly": summary(ew.equity, traded_value=float(ew.traded_value.sum())),
                "KOSPI200 (index, no costs)": summary(kc / kc[0] * 1e8)}
        val_raw = {**envs["val"], "z": raw.astype(np.float32)}
        out[k] = {"test": {n: {key: float(v[key]) for key in ("sharpe", "annual_return", "max_drawdown", "turnover")}
                           for n, v in rows.items()},
                  "book_val_sharpe": sharpe(run_policy(envs["val"], lambda obs: full)["equity"]),
                  "rule_val_sharpe": sharpe(run_policy(val_raw, rule)["equity"]),
                  "cost_rate": envs["train"]["cost_rate"]}
    return out


def run(args) -> dict:
    import ray
    from ray import tune

    from market.data import DataPaths
    from training.tune import _ray_init

    paths = DataPaths(root=Path(args.data_dir)) if args.data_dir else DataPaths()
    t0 = time.time()
    inputs = build_inputs(paths, Path(args.storage) / "exposure_inputs.npz")
    data = np.load(inputs)
    base = baselines(paths, data)
    print(f"inputs and baselines: {time.time() - t0:.0f}s", flush=True)
    configs, hps = list(CONFIGS), {}
    if args.from_search:  # each algorithm's configuration chosen by the search (its drawdown penalty too)
        found = json.loads(Path(args.from_search).read_text())
        hps = {a: found[a]["chosen"]["config"] for a in found["algos"] if a in args.algos.split(",")}
        configs = [(a, float(hp["drawdown_penalty"])) for a, hp in hps.items()]
    _ray_init(None, args.num_cpus)
    space = {"inputs": str(inputs), "data_dir": args.data_dir, "steps": args.steps,
             "fold": tune.grid_search(list(range(len(FOLDS)))),
             "config": tune.grid_search(list(range(len(configs)))),
             "seed": tune.grid_search(list(range(args.seeds)))}

    def trainable(config):
        algo, dd = configs[config["config"]]
        hp = {k: v for k, v in hps.get(algo, {}).items() if k != "drawdown_penalty"}
        trial({**config, "algo": algo, "drawdown_penalty": dd, "hp": hp or None})

    tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}), param_space=space,
                       tune_config=tune.TuneConfig(max_concurrent_trials=args.num_cpus),
                       run_config=tune.RunConfig(name="rl-exposure", verbose=0, storage_path=args.storage))
    trials = []
    grid = tuner.fit()
    for r in (grid[i] for i in range(len(grid))):
        cfg, met = r.config or {}, r.metrics or {}
        if r.error:
            raise RuntimeError(f"trial {cfg} failed: {r.error}")
        algo, dd = configs[cfg["config"]]
        trials.append({"fold": cfg["fold"], "algo": algo, "drawdown_penalty": dd, "seed": cfg["seed"],
                       **{k: met[k] for k in ("val_sharpe", "select_sharpe", "select_history", "steps", "train_s", "env_test_sharpe",
                                                    "test_sharpe", "test_annual", "test_mdd", "test_turnover",
                                                    "test_mean_level", "test_level_changes")}})
    ray.shutdown()
    return {"baselines": {str(k): v for k, v in base.items()}, "trials": trials, "seeds": args.seeds,
            "steps": args.steps, "minutes": (time.time() - t0) / 60, "configs": configs, "hp": hps,
            "from_search": args.from_search}


# ------------------------------------------------------------------------------------------------
# the hyper-parameter search (issue 12, item 4)
# fold 0: its validation window (2015–16) ends before every fold's test window, so the configuration
# the search picks has seen none of them
SEARCH_FOLD = 0
SEARCH_SECTION = "## The exposure controller's hyper-parameter search"


def search_space(algo: str) -> dict:
    """The allocation agents' space (training/tune.py) with this env's reward parameter: the
    turnover penalty stays fixed (TURNOVER_PENALTY), the drawdown penalty is searched over [0, 1],
    and DQN's exploration may last up to a tenth of a 1M-step run."""
    from ray import tune

    from training.tune import search_space as allocation_space

    space = {k: v for k, v in allocation_space(algo).items() if k not in ("turnover_penalty", "drawdown_penalty")}
    space["drawdown_penalty"] = tune.uniform(0.0, 1.0)
    if algo == "dqn":
        space["epsilon_steps"] = tune.choice([5_000, 20_000, 100_000])
    return space


def search_trial(config: dict) -> None:
    """Tune trainable of the search: one configuration on SEARCH_FOLD's training window; reports
    the kept policy's validation Sharpe (the objective ASHA and the choice use) every
    `report_every` env steps."""
    from ray import tune

    from training import algos as A
    from training.exposure import EXPOSURE_ENV_ID, register_exposure_env

    algo_name, seed = config["algo"], int(config["seed"])
    hp = {k: v for k, v in config.items() if k in A.DEFAULTS[algo_name]}
    envs = fold_configs(np.load(config["inputs"]), FOLDS[SEARCH_FOLD], float(config["drawdown_penalty"]), seed)
    register_exposure_env()
    algo = A.build_config(algo_name, envs["train"], hp, preset="2core", seed=seed, env_id=EXPOSURE_ENV_ID).build_algo()
    t0 = time.time()

    def report(steps, sel, val):
        tune.report({"steps": steps, "val_sharpe": val, "select_sharpe": sel, "train_s": time.time() - t0})

    try:
        train_and_keep(algo, envs, int(config["max_steps"]), report=report, every=int(config["report_every"]))
    finally:
        algo.stop()


def search(args) -> dict:
    """Per algorithm: `--trials` Optuna trials of up to `--max-steps` env steps, ASHA stopping the
    weak ones on validation Sharpe; the choice is the best validation Sharpe among the trials that
    trained the whole budget."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from market.data import DataPaths
    from training.exposure import LEVELS
    from training.tune import _ray_init

    paths = DataPaths(root=Path(args.data_dir)) if args.data_dir else DataPaths()
    t0 = time.time()
    inputs = build_inputs(paths, Path(args.storage) / "exposure_inputs.npz")
    envs = fold_configs(np.load(inputs), FOLDS[SEARCH_FOLD], 0.0, 0)
    full = np.full((1,), len(LEVELS) - 1)
    out: dict = {"fold": SEARCH_FOLD, "trials_per_algo": args.trials, "max_steps": args.max_steps,
                 "book_val_sharpe": sharpe(run_policy(envs["val"], lambda obs: full)["equity"]), "algos": []}
    _ray_init(None, args.num_cpus)
    for algo in ("dqn", "appo"):
        a0 = time.time()
        space = search_space(algo)
        fixed = {"algo": algo, "seed": 0, "inputs": str(inputs), "max_steps": args.max_steps,
                 "report_every": max(1, args.max_steps // 20)}
        # rungs at 1/16, 1/4 and all of the budget; the top quarter at a rung goes on
        scheduler = ASHAScheduler(time_attr="steps", metric="val_sharpe", mode="max", max_t=args.max_steps,
                                  grace_period=max(1, args.max_steps // 16), reduction_factor=4)
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(lambda c, fixed: search_trial({**c, **fixed}), fixed=fixed),
                                {"cpu": 1}),
            param_space=space,
            tune_config=tune.TuneConfig(num_samples=args.trials, search_alg=OptunaSearch(metric="val_sharpe", mode="max",
                                                                                          seed=0),
                                        scheduler=scheduler, max_concurrent_trials=args.num_cpus),
            run_config=tune.RunConfig(name=f"rl-exposure-search-{algo}", verbose=0, storage_path=args.storage))
        grid = tuner.fit()
        rows = []
        for r in (grid[i] for i in range(len(grid))):
            if r.error:
                raise RuntimeError(f"{algo} trial {r.config} failed: {r.error}")
            hist = r.metrics_dataframe
            rows.append({"config": {k: r.config[k] for k in space}, "steps": int(r.metrics["steps"]),
                         "val_sharpe": float(r.metrics["val_sharpe"]), "select_sharpe": float(r.metrics["select_sharpe"]),
                         "train_s": float(r.metrics["train_s"]),
                         "val_by_steps": [[int(st), round(float(v), 4)] for st, v in zip(hist["steps"], hist["val_sharpe"])]})
        done = [t for t in rows if t["steps"] >= args.max_steps]
        chosen = max(done, key=lambda t: t["val_sharpe"])
        out["algos"].append(algo)
        out[algo] = {"trials": rows, "chosen": chosen, "minutes": (time.time() - a0) / 60,
                     "env_steps": int(sum(t["steps"] for t in rows))}
        print(f"{algo}: {len(rows)} trials, {len(done)} trained {args.max_steps} steps; chosen val Sharpe "
              f"{chosen['val_sharpe']:.2f} (book {out['book_val_sharpe']:.2f}) in {out[algo]['minutes']:.0f} min", flush=True)
    ray.shutdown()
    out["minutes"] = (time.time() - t0) / 60
    return out


def render_search(res: dict) -> str:
    fold = FOLDS[res["fold"]]
    lines = [SEARCH_SECTION, "",
             f"`python -m reports.rl_exposure --search --trials {res['trials_per_algo']} --max-steps {res['max_steps']}` "
             f"({res['minutes']:.0f} min on 2 cores; raw results in reports/rl_exposure_search.json). Per algorithm a "
             "Ray Tune search — OptunaSearch (TPE, seed 0) proposing, ASHA stopping on validation Sharpe at 1/16 and "
             f"1/4 of the budget (the top quarter goes on) — of {res['trials_per_algo']} trials of up to "
             f"{res['max_steps']:,} env steps each, seed 0, on fold {res['fold']} (train {fold['train_start'][:4]}–"
             f"{fold['train_end'][:4]}, validation {fold['val_start'][:4]}–{fold['val_end'][:4]}: before every test window). "
             "A trial keeps the weights best on its training window's last year; its objective is those weights' "
             "validation Sharpe in the env. The choice: the best among the trials that trained the whole budget.", "",
             f"The book at full exposure has validation Sharpe {res['book_val_sharpe']:.2f} on this window.", ""]
    for algo in res["algos"]:
        r = res[algo]
        keys = list(r["chosen"]["config"])
        lines += [f"### {algo.upper()}: {len(r['trials'])} trials, {r['env_steps']:,} env steps in {r['minutes']:.0f} min", "",
                  "| trial | env steps | validation Sharpe | last-year Sharpe | " + " | ".join(keys) + " |",
                  "|---" * (4 + len(keys)) + "|"]
        for i, t in enumerate(sorted(r["trials"], key=lambda t: (-t["steps"], -t["val_sharpe"]))):
            mark = " **(chosen)**" if t == r["chosen"] else ""
            vals = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in (t["config"][k] for k in keys)]
            lines.append(f"| {i}{mark} | {t['steps']:,} | {t['val_sharpe']:.2f} | {t['select_sharpe']:.2f} | "
                         + " | ".join(vals) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _ms(v, pct=False) -> str:
    v = np.asarray(v, dtype=float)
    return f"{v.mean():+.1%} ± {v.std():.1%}" if pct else f"{v.mean():.2f} ± {v.std():.2f}"


def render(res: dict) -> str:
    src = res.get("from_search")
    lines = [SEARCHED_SECTION if src else SECTION, "",
             f"`python -m reports.rl_exposure --seeds {res['seeds']} --steps {res['steps']}"
             + (f" --from-search {src} --algos {','.join(res['hp'])}" if src else "") + "` "
             f"({res['minutes']:.0f} min on 2 cores; raw results in reports/"
             f"{'rl_exposure_searched.json' if src else 'rl_exposure.json'}). "
             "What it does and the rule for the default: the module's docstring. Test numbers: the real "
             "engine (next-bar fills, fees, dated tax, slippage), each test window measured once.", ""]
    if src:
        lines += ["The configurations the search chose (section above; seed 0 there, seeds 0..n-1 here): "
                  + "; ".join(f"{a.upper()} " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                                          for k, v in hp.items()) for a, hp in res["hp"].items())
                  + ". They were chosen on fold 0's validation window, so fold 0's validation numbers below are "
                  "the best of a search (biased upwards); folds 1 and 2's are not.", ""]
    configs = [tuple(c) for c in res.get("configs", CONFIGS)]
    enters = True
    ablation = []
    for k, fold in enumerate(FOLDS):
        base = res["baselines"][str(k)]
        rows = [t for t in res["trials"] if t["fold"] == k]
        by = {c: [t for t in rows if (t["algo"], t["drawdown_penalty"]) == c] for c in configs}
        val = {c: float(np.mean([t["val_sharpe"] for t in ts])) for c, ts in by.items() if ts}
        chosen = max(val, key=lambda c: (val[c], -configs.index(c)))
        enters &= val[chosen] > base["book_val_sharpe"]
        ablation.append((k, by[chosen], base["test"]["ensemble without controller (the book)"], chosen))
        lines += [f"### Fold {k}: train {fold['train_start'][:4]}–{fold['train_end'][:4]}, validation "
                  f"{fold['val_start'][:4]}–{fold['val_end'][:4]}, test {fold['test_start']}..{fold['test_end']}", "",
                  f"Validation Sharpe (env, mean over seeds): the book at full exposure {base['book_val_sharpe']:.2f}, "
                  f"the 200-bar rule {base['rule_val_sharpe']:.2f}; "
                  + ", ".join(f"{a.upper()} dd-penalty {dd:g} {v:.2f}" for (a, dd), v in val.items())
                  + f". Chosen: **{chosen[0].upper()}, drawdown penalty {chosen[1]:g}**. Cost of scaling the book: "
                  f"{base['cost_rate']:.3%} per traded won (fees + slippage on the training rows).", "",
                  "| test window | Sharpe | annual return | MDD | turnover ×/yr | mean level | level changes |",
                  "|---|---|---|---|---|---|---|"]
        for c in configs:
            ts = by[c]
            if not ts:
                continue
            mark = " (chosen)" if c == chosen else ""
            lines.append(f"| controller {c[0].upper()} dd {c[1]:g}{mark}, {len(ts)} seeds | "
                         f"{_ms([t['test_sharpe'] for t in ts])} | {_ms([t['test_annual'] for t in ts], True)} | "
                         f"{_ms([t['test_mdd'] for t in ts], True)} | {_ms([t['test_turnover'] for t in ts])} | "
                         f"{np.mean([t['test_mean_level'] for t in ts]):.2f} | "
                         f"{np.mean([t['test_level_changes'] for t in ts]):.0f} |")
        for name, m in base["test"].items():
            lines.append(f"| {name} | {m['sharpe']:.2f} | {m['annual_return']:+.1%} | {m['max_drawdown']:+.1%} | "
                         f"{m['turnover']:.2f} | | |")
        lines.append("")
    lines += ["### Ablation: the ensemble with and without its controller (the chosen configuration, same test windows)", "",
              "| fold | controller | Sharpe with / without | annual return with / without | MDD with / without | "
              "MDD cut | return kept |", "|---|---|---|---|---|---|---|"]
    for k, ts, book, c in ablation:
        sh, ann, mdd = (np.mean([t[key] for t in ts]) for key in ("test_sharpe", "test_annual", "test_mdd"))
        lines.append(f"| {k} | {c[0].upper()} dd {c[1]:g} | {sh:.2f} / {book['sharpe']:.2f} | {ann:+.1%} / "
                     f"{book['annual_return']:+.1%} | {mdd:+.1%} / {book['max_drawdown']:+.1%} | "
                     f"{1 - mdd / book['max_drawdown']:.0%} | {ann / book['annual_return']:.0%} |")
    lines += ["", "The issue's goal for the RL part: a better walk-forward Sharpe, or a max drawdown cut by >= 30 % "
              "at >= 90 % of the return.", ""]
    lines.append(f"By the rule for the default (the module's docstring), the controller {'ENTERS' if enters else 'does NOT enter'} the "
                 "default ensemble (its chosen configuration's mean validation Sharpe "
                 f"{'beats' if enters else 'does not beat'} the uncontrolled book's on every fold).")
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path, section: str = SECTION) -> None:
    body = path.read_text() if path.exists() else ""
    if section in body:
        head, _, rest = body.partition(section)
        nxt = rest.find("\n## ")
        body = head + text + (rest[nxt + 1:] if nxt >= 0 else "")
    else:
        body = body.rstrip("\n") + "\n\n" + text
    path.write_text(body)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.rl_exposure", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=1_000_000, help="env steps per training run (item 4's budget)")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--data-dir")
    ap.add_argument("--storage", default=str(Path(tempfile.gettempdir()) / "krt-rl-exposure"))
    ap.add_argument("--json", help="results file (default reports/rl_exposure.json; with --from-search "
                                   "rl_exposure_searched.json; with --search rl_exposure_search.json)")
    ap.add_argument("--report", default=str(ROOT / "rl.md"))
    ap.add_argument("--report-only", action="store_true", help="rewrite the section from --json")
    ap.add_argument("--baselines-only", action="store_true",
                    help="recompute the baselines into --json (the trials' inputs from --storage), then rewrite")
    ap.add_argument("--search", action="store_true",
                    help="the hyper-parameter search (Tune + OptunaSearch + ASHA) on fold 0 instead of the walk-forward")
    ap.add_argument("--trials", type=int, default=16, help="--search: trials per algorithm")
    ap.add_argument("--max-steps", type=int, default=1_000_000, help="--search: env steps of a trial that is not stopped")
    ap.add_argument("--from-search", help="walk-forward each algorithm's configuration chosen in this search result")
    ap.add_argument("--algos", default="dqn,appo", help="--from-search: the algorithms to walk forward")
    args = ap.parse_args(argv)
    name = "rl_exposure_search.json" if args.search else "rl_exposure_searched.json" if args.from_search else "rl_exposure.json"
    args.json = args.json or str(ROOT / name)
    if args.search:
        if args.report_only:
            res = json.loads(Path(args.json).read_text())
        else:
            res = search(args)
            Path(args.json).write_text(json.dumps(res, indent=1))
        text = render_search(res)
        write_section(text, Path(args.report), SEARCH_SECTION)
        print(text)
        return 0
    if args.report_only or args.baselines_only:
        res = json.loads(Path(args.json).read_text())
        if args.baselines_only:  # the baselines again, from the inputs the trials used
            from market.data import DataPaths

            paths = DataPaths(root=Path(args.data_dir)) if args.data_dir else DataPaths()
            data = np.load(Path(args.storage) / "exposure_inputs.npz")
            res["baselines"] = {str(k): v for k, v in baselines(paths, data).items()}
            Path(args.json).write_text(json.dumps(res, indent=1))
    else:
        res = run(args)
        Path(args.json).write_text(json.dumps(res, indent=1))
    text = render(res)
    write_section(text, Path(args.report), SEARCHED_SECTION if res.get("from_search") else SECTION)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
