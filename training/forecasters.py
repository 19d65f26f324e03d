"""Forecasters in the training room: the Ray Tune + Optuna search of LightGBM's hyper-parameters,
the registered model (`forecaster-lgbm`), the agent that decides with it, and its promotion score.

    trader train --algo lgbm --trials 8 --fit-date 2017-01-01

The search: each trial is one LightGBM parameter set (Optuna, seeded), scored by
`RankForecaster.validation_rank_ic_of` — the mean daily Rank IC on the last `validation_bars`
label rows before `--fit-date`, trained on the rows whose label window ends before that span
(the same purged split `fit` uses to choose among its grid; never a test window). A trial is one
fit, with no intermediate result to stop on, so there is no ASHA scheduler. The first trials are
the agent's default grid (`default_grid_points`), so the search never picks worse than it. Every trial is an
MLflow run in the "forecasters" experiment (its params, `val_rank_ic`, every input file with its
sha256, the git sha: training/tracking.py's conventions). The best parameters are then refitted on
every purged row before the fit date; that model (LightGBM's text model file + meta.json in the
run's `agent/` folder) is registered as `forecaster-lgbm` with the registry's sha256 and alias
`challenger`. `trader promote --algo lgbm` moves `champion` (training/promote.py).

`RegisteredLGBM` is the `lgbm` agent with `StrategyContext(model="models:/forecaster-lgbm@champion")`
(training/strategies.py plugs it in): it loads the checksum-verified model and its chosen
parameters, never refits, refuses decisions before the model's last training bar (look-ahead), and
`refresh()` follows a promotion.
"""
from __future__ import annotations

import datetime as dt
import json
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from market.data import DataPaths, Panel, load_panel
from strategies.base import LookAheadError
from strategies.forecaster import LGBMForecaster, daily_ic, forward_returns
from training import registry as R
from training import tracking as T

EXPERIMENT = "forecasters"
MODEL_FILE = "model.txt"   # LightGBM's own text format: loaded by parsing, never unpickled
META_FILE = "meta.json"
DEFAULT_TRIALS = 6         # the 3 default-grid points + 3 sampled; one LightGBM fit each, 2 at once on 2 cores


def search_space() -> dict:
    """What Optuna samples. `min_data_in_leaf` is LightGBM's name for min_child_samples (the
    forecaster's BASE_PARAMS use it, so a sampled value replaces the default, never clashes)."""
    from ray import tune

    return {"num_leaves": tune.randint(7, 64), "learning_rate": tune.loguniform(0.01, 0.2),
            "n_estimators": tune.randint(50, 401), "min_data_in_leaf": tune.randint(50, 501),
            "feature_fraction": tune.uniform(0.5, 1.0), "lambda_l2": tune.loguniform(1e-3, 10.0)}


PARAMS = ("num_leaves", "learning_rate", "n_estimators", "min_data_in_leaf", "feature_fraction", "lambda_l2")


def _typed(config: dict) -> dict[str, Any]:
    """The searched LightGBM parameters of a trial config, as plain ints and floats."""
    return {k: int(config[k]) if k in ("num_leaves", "n_estimators", "min_data_in_leaf") else float(config[k])
            for k in PARAMS if k in config}


def default_grid_points() -> list[dict[str, Any]]:
    """The lgbm agent's own grid (DEFAULT_GRID over BASE_PARAMS) as the search's first trials: the
    search then never ends below what an agent without a model would choose."""
    from strategies.forecaster import BASE_PARAMS, DEFAULT_GRID

    return [{k: {**BASE_PARAMS, **c}[k] for k in PARAMS} for c in DEFAULT_GRID]


@dataclass
class ForecastSearchOptions:
    model: str = "lgbm"
    fit_date: str = "2017-01-01"      # fitted and validated on bars before this date only
    trials: int = DEFAULT_TRIALS
    seed: int = 0
    start: str | None = None          # first bar of the history (default: the data's first)
    symbols: tuple[str, ...] | None = None   # default: every symbol in the data
    horizon: int = 20
    top_k: int = 10
    rebalance: str = "monthly"
    validation_bars: int = 246
    min_train_rows: int = 150
    data_dir: str | None = None
    mlflow_dir: str = str(R.DEFAULT_DIR)
    experiment: str = EXPERIMENT
    storage: str = str(R.PROJECT_ROOT / "runs" / "tune")
    name: str = "krt"
    search_space: dict | None = None  # override for tests: {param: tune domain}

    def __post_init__(self) -> None:
        if self.model not in R.FORECASTERS:
            raise ValueError(f"unknown forecaster {self.model!r}; known: {', '.join(R.FORECASTERS)}")
        dt.date.fromisoformat(self.fit_date)  # a clear error for a malformed date
        if self.trials < 1:
            raise ValueError(f"--trials must be at least 1, got {self.trials}")


def _paths(data_dir: str | None) -> DataPaths:
    return DataPaths(root=Path(data_dir)) if data_dir else DataPaths()


def history_before(opts: ForecastSearchOptions) -> Panel:
    """The panel up to the day before the fit date: nothing a trial or the refit sees is later."""
    end = (dt.date.fromisoformat(opts.fit_date) - dt.timedelta(days=1)).isoformat()
    return load_panel(_paths(opts.data_dir), symbols=list(opts.symbols) if opts.symbols else None,
                      start=opts.start, end=end)


def forecaster(opts: ForecastSearchOptions, params: dict[str, Any]) -> LGBMForecaster:
    """The forecaster the lgbm strategy builds (strategies/registry.py's features), with one
    candidate: `params`."""
    from strategies.registry import StrategyContext, _forecast_features

    features = _forecast_features(StrategyContext(paths=_paths(opts.data_dir), seed=opts.seed))
    return LGBMForecaster(features, horizon=opts.horizon, top_k=opts.top_k, rebalance=opts.rebalance,
                          seed=opts.seed, grid=(dict(params),), validation_bars=opts.validation_bars,
                          min_train_rows=opts.min_train_rows, name=opts.model)


def _settings(opts: ForecastSearchOptions) -> dict[str, Any]:
    return {k: v for k, v in asdict(opts).items() if k not in ("search_space", "storage", "mlflow_dir")}


def _track(opts: ForecastSearchOptions, uri: str, name: str, params: dict[str, Any], metrics: dict[str, float],
           tags: dict[str, str]) -> str:
    rec = T.record(opts.experiment, name, settings={**_settings(opts), "params": params}, metrics=metrics,
                   input_files=T.data_paths_files(_paths(opts.data_dir)), tags=tags)
    errors: list[str] = []
    run_id = T.track_run(rec, warn=errors.append, mlflow_dir=opts.mlflow_dir, tracking_uri=uri)
    if run_id is None:  # a search whose trials are not recorded cannot be registered from
        raise RuntimeError(errors[0] if errors else "MLflow tracking failed")
    return run_id


def trial(config: dict, fixed: dict) -> None:
    """Tune function trainable: one parameter set scored on the purged validation span."""
    from ray import tune

    opts = ForecastSearchOptions(**fixed["opts"])
    params = _typed(config)
    ric = forecaster(opts, params).validation_rank_ic_of(history_before(opts), params)
    ctx = tune.get_context()
    # the store the driver resolved (a trial's process may not see its MLFLOW_TRACKING_URI)
    run_id = _track(opts, fixed["tracking_uri"], f"{opts.model}-{ctx.get_trial_name()}", params,
                    {"val_rank_ic": ric},
                    {"model": opts.model, "search_id": config["search_id"], "trial_id": ctx.get_trial_id(),
                     "fit_date": opts.fit_date, "seed": str(opts.seed)})
    tune.report({"val_rank_ic": ric, "run_id": run_id})


def search(opts: ForecastSearchOptions) -> dict:
    """Search, refit the best on every row before the fit date, register it as challenger."""
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    uri = R.tracking_uri(opts.mlflow_dir)
    R.ensure_experiment(uri, opts.experiment, opts.mlflow_dir)
    search_id = uuid.uuid4().hex[:12]
    space = {**(opts.search_space or search_space()), "search_id": search_id}
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    fixed = {"opts": {k: v for k, v in asdict(opts).items() if k != "search_space"}, "tracking_uri": uri}
    # the default grid first, within the default space only (a test's narrow space may exclude it)
    points = default_grid_points()[:opts.trials] if opts.search_space is None else []
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trial, fixed=fixed), {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(metric="val_rank_ic", mode="max", num_samples=opts.trials,
                                    search_alg=OptunaSearch(seed=opts.seed, points_to_evaluate=points or None),
                                    max_concurrent_trials=cpus),
        run_config=tune.RunConfig(name=f"{opts.name}-{opts.model}-{search_id}",
                                  storage_path=str(Path(opts.storage).resolve()), verbose=1,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    grid = tuner.fit()
    results = [grid[i] for i in range(len(grid))]
    # (metrics, config) of every trial that scored
    rows = [(r.metrics, r.config) for r in results
            if not r.error and r.metrics and r.config and np.isfinite(r.metrics.get("val_rank_ic", np.nan))]
    if not rows:
        errors = [str(r.error).splitlines()[-1] for r in results if r.error][:1]
        raise RuntimeError(f"every {opts.model} trial failed" + (f": {errors[0]}" if errors else ""))
    metrics, config = max(rows, key=lambda mc: mc[0]["val_rank_ic"])
    return register_best(opts, _typed(config), float(metrics["val_rank_ic"]), metrics["run_id"], search_id,
                         trials=len(rows), uri=uri)


def register_best(opts: ForecastSearchOptions, params: dict[str, Any], val_rank_ic: float, trial_run: str,
                  search_id: str, *, trials: int, uri: str) -> dict:
    """Refit `params` on every purged row before the fit date; log it as a run with its model
    folder; register that folder (sha256 recorded) as forecaster-<model> @challenger."""
    history = history_before(opts)
    f = forecaster(opts, params)
    f.fit(history)  # one candidate: no validation split, every purged label row
    data_end = str(history.date(len(history) - 1))
    meta = {"model": opts.model, "params": f.chosen, "horizon": opts.horizon, "top_k": opts.top_k,
            "rebalance": opts.rebalance, "validation_bars": opts.validation_bars, "seed": opts.seed,
            "fit_date": opts.fit_date, "data_end": data_end, "symbols": list(history.symbols),
            "features": list(f.features.names), "val_rank_ic": val_rank_ic, "search_id": search_id,
            "trial_run_id": trial_run, "code_version": R.git_sha()}
    run_id = _track(opts, uri, f"{opts.model}-fit-{opts.fit_date}", dict(f.chosen or {}), {"val_rank_ic": val_rank_ic},
                    {"model": opts.model, "search_id": search_id, "trial_run_id": trial_run,
                     "fit_date": opts.fit_date, "seed": str(opts.seed),
                     # what promote reads as the last date the model was trained or selected on
                     "val_window": f"..{data_end}"})
    with tempfile.TemporaryDirectory(prefix="krt-forecaster-") as tmp:
        folder = Path(tmp) / R.AGENT_PATH
        folder.mkdir()
        f.fitted_model.save_model(str(folder / MODEL_FILE))
        (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        R.client(uri).log_artifacts(run_id, str(folder), R.AGENT_PATH)
    desc = (f"{opts.model} challenger: validation Rank IC {val_rank_ic:.4f} (mean daily, the "
            f"{opts.validation_bars} label rows before {opts.fit_date}, purged), best of {trials} Optuna trials "
            f"(seed {opts.seed}); refitted on every row up to {data_end}.")
    version = R.register(uri, opts.model, run_id, desc, tags={
        "val_rank_ic": f"{val_rank_ic:.6f}", "fit_date": opts.fit_date, "data_end": data_end,
        "search_id": search_id, "code_version": meta["code_version"]})
    print(f"[tune] {opts.model}: registered {R.model_name(opts.model)} v{version} as challenger — {desc}", flush=True)
    return {"algo": opts.model, "model": R.model_name(opts.model), "version": version, "alias": R.CHALLENGER,
            "run_id": run_id, "val_rank_ic": val_rank_ic, "params": meta["params"], "trials": trials,
            "tracking_uri": uri, "search_id": search_id}


# ------------------------------------------------------------------------------------------------
# the registered model as an agent
def load_registered(source: str) -> tuple[Any, dict, str | None]:
    """(booster, meta, version) of `models:/forecaster-lgbm@champion`, `models:/forecaster-lgbm/3`
    (checksum verified: ModelIntegrityError if the store's files differ) or a model folder."""
    import lightgbm as lgb

    uri, version = R.resolve(source)
    if uri.startswith("models:/"):
        name = uri[len("models:/"):].split("@")[0].split("/")[0]
        local = R.download_verified(R.tracking_uri(), name, str(version))
    else:
        local = Path(uri)
    folder = local / R.AGENT_PATH if (local / R.AGENT_PATH).is_dir() else local
    if not (folder / MODEL_FILE).is_file() or not (folder / META_FILE).is_file():
        raise FileNotFoundError(f"{source} is not a forecaster folder (needs {MODEL_FILE} and {META_FILE}): {folder}")
    return lgb.Booster(model_file=str(folder / MODEL_FILE)), json.loads((folder / META_FILE).read_text()), version


@dataclass
class RegisteredLGBM(LGBMForecaster):
    """The lgbm agent deciding with a registered model and the parameters its search chose."""

    source: str | None = None
    version: str | None = None
    meta: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, features, source: str) -> RegisteredLGBM:
        agent = cls(features, refit_every=None)
        agent._use(source)
        return agent

    def _use(self, source: str) -> None:
        booster, meta, version = load_registered(source)
        names = list(self.features.names)
        if meta.get("features") != names:
            raise ValueError(f"{source}: the model was trained on {len(meta.get('features') or [])} features, "
                             f"this data gives {len(names)} (other fundamentals or code): refit it")
        self.horizon, self.top_k, self.rebalance = int(meta["horizon"]), int(meta["top_k"]), str(meta["rebalance"])
        self.seed, self.validation_bars = int(meta["seed"]), int(meta["validation_bars"])
        self.grid = (dict(meta["params"]),)
        self.use_fitted(booster, meta["params"])
        self.source, self.version, self.meta = source, version, meta

    @property
    def last_seen_date(self) -> str:
        """The last bar the model was trained or selected on."""
        return str(self.meta["data_end"])

    def refresh(self) -> bool:
        """Pick up a new version behind the alias (after `trader promote`). True if swapped."""
        if not self.source or not self.source.startswith("models:/") or "@" not in self.source:
            return False
        _, version = R.resolve(self.source)
        if version == self.version:
            return False
        self._use(self.source)
        return True

    def _refuse_look_ahead(self, last: str, what: str) -> None:
        if self.last_seen_date > last:
            raise LookAheadError(f"{self.name}: model {self.source} was fitted on data up to {self.last_seen_date}, "
                                 f"after {what} ({last}): that is look-ahead; use a model fitted before it")

    def fit(self, history: Panel) -> None:
        """Never refits: refuses a model that saw data after the history ends."""
        if len(history) == 0:
            raise LookAheadError(f"{self.name}: an empty history; model {self.source} was fitted on data up to "
                                 f"{self.last_seen_date}")
        self._refuse_look_ahead(str(history.date(len(history) - 1)), "the history ends")

    def target_weights(self, window: Panel) -> np.ndarray:
        if len(window):
            self._refuse_look_ahead(str(window.date(len(window) - 1)), "the decision bar")
        return super().target_weights(window)


def oos_rank_ic(model_uri: str, data_dir: str | None, start: str, end: str) -> dict:
    """Mean daily Rank IC of the model's scores on the bars in [start, end] whose label window
    ends inside the data up to `end` (the same label as in training)."""
    from strategies.registry import StrategyContext, _forecast_features

    paths = _paths(data_dir)
    agent = RegisteredLGBM.load(_forecast_features(StrategyContext(paths=paths)), model_uri)
    panel = load_panel(paths, symbols=agent.meta.get("symbols") or None, end=end)
    dates = np.asarray(panel.dates).astype("datetime64[D]")
    fwd_all = forward_returns(panel.close, agent.horizon)
    rows = np.flatnonzero((dates >= np.datetime64(start)) & np.isfinite(fwd_all).any(axis=1))
    if len(rows) == 0:
        raise ValueError(f"no bar in {start}..{end} has a complete {agent.horizon}-bar label")
    agent._refuse_look_ahead(str(panel.date(int(rows[0]))), "the out-of-sample start")
    _, ric = daily_ic(agent.scores(panel, rows), fwd_all[rows])
    return {"rank_ic": float(np.nanmean(ric)) if np.isfinite(ric).any() else float("nan"),
            "days": int(np.isfinite(ric).sum())}
