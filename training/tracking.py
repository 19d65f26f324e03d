"""Every run in the one MLflow store: backtests, demos, walk-forward reports and training trials.

Like Qlib's recorder: a run is an MLflow run with what made it (strategy, span, every input data
file with its sha256, costs, seed, git sha, the settings used) as params, its headline numbers
as metrics and its report and equity curve as artifacts, so runs can be compared in the MLflow
UI and on the dashboard. The store is the one training/registry.py resolves
(`MLFLOW_TRACKING_URI`, else the embedded sqlite file under runs/mlflow or `KRT_MLFLOW_DIR`).

Tracking is bookkeeping on top of a run that has already written its own files: a store that
cannot be reached or written is a warning on stderr, never a lost or failed run (`track_run`
catches everything and returns None). This module imports no Ray (mlflow only, lazily), so the
Ray-free commands (`trader backtest`) stay Ray-free; backtest/ itself never imports it (the
plain rooms stay below training/), the command layer calls it with what the run wrote.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from training import registry as R

# one experiment per kind of run, next to the training trials' "rl-agents"
BACKTEST, DEMO, WALK_FORWARD = "backtests", "demos", "walk-forward"
# MLflow refuses longer param values; a longer value is cut with a marker (the full settings are
# also logged whole as the settings.json artifact)
MAX_PARAM_CHARS = 500

_digests: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (memoised per path, size and mtime: a run hashes each input once)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _digests:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _digests[key] = h.hexdigest()
    return _digests[key]


def input_file_params(files: Mapping[str, str | Path | None]) -> dict[str, str]:
    """{"data.<name>": path, "data.<name>.sha256": digest} for every file that exists; a named
    file that does not exist is logged as missing (the run did not read it)."""
    out: dict[str, str] = {}
    for name, path in files.items():
        if path is None:
            continue
        p = Path(path)
        out[f"data.{name}"] = str(p.resolve())
        out[f"data.{name}.sha256"] = file_sha256(p) if p.is_file() else "missing"
    return out


def data_paths_files(paths) -> dict[str, Path]:
    """Every file of a market.data.DataPaths (prices, index, etf, fundamentals, market caps,
    symbols, delisted): what a run over those paths may read."""
    return {f.name: paths.path(f.name) for f in fields(paths) if f.name != "root"}


def costs_params(costs) -> dict[str, str]:
    """The fees a run paid under: a market.accounting.CostModel and the dated sell-tax table
    (`costs.sell_tax.<from date>` = "kospi/kosdaq/konex" rates)."""
    from market.krx import SELL_TAX_TABLE

    out = {f"costs.{k}": str(getattr(v, "value", v)) for k, v in
           ((f.name, getattr(costs, f.name)) for f in fields(costs))}
    out.update({f"costs.sell_tax.{p.start}": f"{p.kospi}/{p.kosdaq}/{p.konex}" for p in SELL_TAX_TABLE})
    return out


def flat_params(prefix: str, value: Any) -> dict[str, str]:
    """Nested settings (dicts, dataclasses, lists) as flat `prefix.key` params, values as text."""
    if is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in fields(value)}
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flat_params(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return {prefix: str(value)}


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric, finite entries of a metrics dict (MLflow metrics are floats)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(float(v)):
            out[k] = float(v)
    return out


def summary_metrics(summary) -> dict[str, float]:
    """The terminal summary's headline numbers (backtest.summary.RunSummary) as metrics: each
    benchmark row's total, CAGR, volatility, Sharpe and max drawdown under `<label>.<key>`, the
    trades' win rate, holding period, round trips and costs."""
    from backtest.summary import COMPARISON_COLUMNS

    out: dict[str, float] = {}
    for row in summary.rows[1:]:
        label = row.label.lower().replace(" ", "_")
        out.update({f"{label}.{k}": row.metrics[k] for k, _, _ in COMPARISON_COLUMNS if k in row.metrics})
    t = summary.trades
    out.update(round_trips=t.round_trips, commission=t.commission, sell_tax=t.tax,
               win_rate=t.win_rate if t.win_rate is not None else math.nan,
               avg_holding_days=t.avg_holding_days if t.avg_holding_days is not None else math.nan,
               final_equity=summary.final_equity)
    return finite_metrics(out)


@dataclass
class RunRecord:
    """What one run logs: params (text), metrics (numbers), files and texts as artifacts."""

    experiment: str
    name: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)     # files, logged at the artifact root
    texts: dict[str, str] = field(default_factory=dict)     # artifact file name -> content
    tags: dict[str, str] = field(default_factory=dict)


def blas_kernel() -> str:
    """The BLAS library numpy calls, its version and the CPU kernel it picked ("openblas 0.3.31
    Haswell"). The same code, data and seed give floats a few ulps apart on another kernel (the HMM
    regime probabilities differ by ~1e-11 between OpenBLAS's Haswell and SkylakeX kernels), and a
    decision path with thresholds can part from there: reports/strategies.md, "Noise", measures
    it. Logged so that two runs that disagree say whether they ran on the same kernel."""
    import numpy  # noqa: F401  (threadpoolctl sees only the libraries already loaded)
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}" for i in blas) or "unknown"


def record(experiment: str, name: str, *, settings: Mapping[str, Any], metrics: Mapping[str, Any],
           input_files: Mapping[str, str | Path | None], costs=None, artifacts: Iterable[str | Path] = (),
           texts: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None) -> RunRecord:
    """A RunRecord with the conventions every kind of run shares: the settings flattened into
    params (and whole as settings.json), every input file with its sha256, the git sha, the BLAS kernel."""
    params = {**flat_params("", dict(settings)), **input_file_params(input_files),
              **(costs_params(costs) if costs is not None else {}), "git_sha": R.git_sha(), "blas": blas_kernel()}
    params = {k: v if len(v) <= MAX_PARAM_CHARS else v[:MAX_PARAM_CHARS - 1] + "…" for k, v in params.items()}
    return RunRecord(experiment=experiment, name=name, params=params, metrics=finite_metrics(metrics),
                     artifacts=[Path(a) for a in artifacts if Path(a).is_file()],
                     texts={"settings.json": json.dumps(dict(settings), indent=2, default=str, ensure_ascii=False),
                            **(texts or {})},
                     tags={"krt.kind": experiment, "git_sha": params["git_sha"], **(tags or {})})


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _quiet_store():
    """MLflow's and alembic's INFO lines ("Creating initial MLflow database tables…") stay off the
    terminal: the command's own output is the summary; warnings still show."""
    import mlflow  # noqa: F401  (its import sets its loggers' levels: set ours after it)

    saved = {}
    for name in ("mlflow", "alembic"):
        lg = logging.getLogger(name)
        saved[name] = lg.level
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def track_run(rec: RunRecord, warn: Callable[[str], None] = _warn, mlflow_dir: str | Path | None = None,
              tracking_uri: str | None = None) -> str | None:
    """Log `rec` as one finished MLflow run in the project's store (`tracking_uri` when a caller
    resolved it elsewhere, e.g. a Tune driver for its trials); its run id, or None (with a
    warning through `warn`) when the store cannot take it. Never raises: the run's own files are
    already written and stay the record of truth."""
    with _quiet_store():
        return _track_run(rec, warn, mlflow_dir, tracking_uri)


def _track_run(rec: RunRecord, warn: Callable[[str], None], mlflow_dir: str | Path | None,
               tracking_uri: str | None = None) -> str | None:
    run_id = None
    try:
        import mlflow
        from mlflow.entities import Metric, Param, RunTag

        uri = tracking_uri or R.tracking_uri(mlflow_dir)
        c = R.client(uri)
        exp_id = R.ensure_experiment(uri, rec.experiment, mlflow_dir)
        run_id = c.create_run(exp_id, run_name=rec.name, tags=dict(rec.tags)).info.run_id
        items = list(rec.params.items())
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            c.log_batch(run_id, params=[Param(k, v) for k, v in items[i:i + 100]])
        ts = int(mlflow.utils.time.get_current_time_millis())
        metrics = [Metric(k, v, ts, 0) for k, v in rec.metrics.items()]
        for i in range(0, len(metrics), 500):
            c.log_batch(run_id, metrics=metrics[i:i + 500], tags=[RunTag("krt.tracked", "1")])
        for path in rec.artifacts:
            c.log_artifact(run_id, str(path))
        for name, text in rec.texts.items():
            c.log_text(run_id, text, name)
        c.set_terminated(run_id, "FINISHED")
        return run_id
    except Exception as exc:  # noqa: BLE001 - tracking must never cost the run
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        warn(f"MLflow tracking failed, the run's files are kept: {type(exc).__name__}: {first}")
        if run_id is not None:
            try:
                R.client(tracking_uri or R.default_tracking_uri(mlflow_dir)).set_terminated(run_id, "FAILED")
            except Exception:  # noqa: BLE001
                pass
        return None


def run_url(run_id: str, experiment: str) -> str:
    """Where to find the run: `<store> · experiment <name> · run <id>` (the MLflow UI shows it)."""
    return f"{R.default_tracking_uri()} · experiment {experiment} · run {run_id}"
