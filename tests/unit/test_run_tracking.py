"""Every `trader backtest` is an MLflow run in the project's store (the one training/registry.py
resolves): settings, every input file with its sha256, costs, seed and git sha as params, the
headline numbers as metrics, the report and equity curve as artifacts. `--config run.yaml` gives
the same options from a file (flags win; unknown keys refused), logged with its hash. A store
that cannot be written costs a warning, never the run's own files."""
import argparse
import hashlib
import json

import pytest
from threadpoolctl import threadpool_info

from cluster.commands import backtest as backtest_command
from training import registry as R
from training import tracking as T

pytestmark = pytest.mark.slow  # MLflow: its import and the store's tables cost 5–8 s, the file ~22 s

PRICES, INDEX = "data/kr_stocks_daily.parquet", "data/kr_index_daily.parquet"
SHORT = ["--prices", PRICES, "--index", INDEX, "--start", "2022-10-04", "--end", "2022-12-29"]


def trader(*argv):
    parser = argparse.ArgumentParser(prog="trader")
    backtest_command.register(parser.add_subparsers())
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture()
def store(monkeypatch):
    """The embedded store, as in a checkout without MLFLOW_TRACKING_URI: the test session's own
    (tests/conftest.py points KRT_MLFLOW_DIR at it), shared so its tables are created once."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return R.DEFAULT_DIR


def runs(experiment: str, out):
    """The runs of `experiment` that wrote into `out` (other tests track into the same store)."""
    c = R.client(R.default_tracking_uri())
    exp = c.get_experiment_by_name(experiment)
    return c, ([] if exp is None else c.search_runs([exp.experiment_id], filter_string=f"params.out = '{out}'"))


def test_a_backtest_is_an_mlflow_run_with_inputs_costs_metrics_and_artifacts(store, tmp_path, capsys):
    out = tmp_path / "bt"
    assert trader("backtest", "--strategy", "equal-weight-monthly", *SHORT, "--seed", 4, "--out", out) == 0
    printed = capsys.readouterr().out
    c, found = runs(T.BACKTEST, out)
    assert len(found) == 1
    run = found[0]
    assert run.info.status == "FINISHED" and run.info.run_id in printed
    p = run.data.params
    assert p["strategy"] == "equal-weight-monthly" and p["seed"] == "4"
    assert p["span"] == "2022-10-04..2022-12-29"
    assert p["data.prices.sha256"] == hashlib.sha256(open(PRICES, "rb").read()).hexdigest()
    assert p["data.index.sha256"] == hashlib.sha256(open(INDEX, "rb").read()).hexdigest()
    assert p["costs.commission_rate"] == "0.00015" and p["costs.sell_tax.2021-01-01"] == "0.0023/0.0023/0.001"
    assert p["git_sha"] == R.git_sha() != ""
    # the floats depend on the BLAS kernel (reports/strategies.md, "Noise"): the run says which it used
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]   # numpy's and scipy's
    assert blas and all(f"{i['internal_api']} {i['version']} {i['architecture']}" in p["blas"] for i in blas)
    metrics = json.loads((out / "metrics.json").read_text())
    assert run.data.metrics["total_return"] == pytest.approx(metrics["total_return"])
    assert run.data.metrics["sharpe"] == pytest.approx(metrics["sharpe"])
    assert "kospi200.total_return" in run.data.metrics and "win_rate" in run.data.metrics
    logged = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"report.html", "equity.csv", "metrics.json", "summary.txt", "settings.json"} <= logged
    local = c.download_artifacts(run.info.run_id, "equity.csv", str(tmp_path))
    assert open(local).read() == (out / "equity.csv").read_text()


def test_no_track_logs_nothing(store, tmp_path):
    out = tmp_path / "bt"
    assert trader("backtest", "--strategy", "buy-hold-kospi200", *SHORT, "--out", out, "--no-track") == 0
    assert (out / "report.html").is_file()
    assert trader("backtest", "--strategy", "buy-hold-kospi200", *SHORT, "--out", tmp_path / "tracked") == 0
    assert runs(T.BACKTEST, out)[1] == [] and len(runs(T.BACKTEST, tmp_path / "tracked")[1]) == 1


def test_a_store_that_cannot_be_written_warns_and_keeps_the_run(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker}/mlflow.db")
    out = tmp_path / "bt"
    assert trader("backtest", "--strategy", "buy-hold-kospi200", *SHORT, "--out", out) == 0
    captured = capsys.readouterr()
    assert "trader backtest: note: MLflow tracking failed, the run's files are kept" in captured.err
    assert "KOSPI200" in captured.out
    for name in ("report.html", "metrics.json", "equity.csv", "fills.csv"):
        assert (out / name).is_file()


def test_config_file_gives_the_options_flags_override_it_and_its_hash_is_logged(store, tmp_path):
    cfg = tmp_path / "run.yaml"
    text = (f"strategy: equal-weight-monthly\nprices: {PRICES}\nindex: {INDEX}\nstart: 2022-10-04\n"
            f"end: 2022-12-29\nseed: 1\ncommission-rate: 0.0003\nseeds: [1, 2]\nout: {tmp_path / 'from-file'}\n")
    cfg.write_text(text)
    assert trader("backtest", "--config", cfg, "--seed", 2, "--out", tmp_path / "bt") == 0
    m = json.loads((tmp_path / "bt" / "metrics.json").read_text())   # --out from the flag
    assert not (tmp_path / "from-file").exists()
    assert m["seed"] == 2 and m["commission_rate"] == 0.0003 and m["seeds"] == [1, 2]
    assert m["start"] == "2022-10-04"                                  # a YAML date, read as the flag's text
    c, (run,) = runs(T.BACKTEST, tmp_path / "bt")
    assert run.data.params["config_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert run.data.params["costs.commission_rate"] == "0.0003" and run.data.params["seed"] == "2"
    local = c.download_artifacts(run.info.run_id, "run.yaml", str(tmp_path / "dl"))
    assert open(local).read() == text


@pytest.mark.parametrize("body, message", [
    ("strategy: technical\nrebalanse: weekly\n", "unknown option 'rebalanse'; did you mean rebalance?"),
    ("strategy: technical\ncash: lots\n", "cash must be int, got 'lots'"),
    ("strategy: technical\nrefit: daily\n", "refit must be one of none, monthly, quarterly, yearly"),
    ("- strategy\n", "must be a mapping of option: value"),
])
def test_config_file_mistakes_are_refused_naming_the_key(tmp_path, capsys, body, message):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(body)
    assert trader("backtest", "--config", cfg) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"trader backtest: error: --config {cfg}") and message in err, err


def test_required_options_missing_from_flags_and_file_are_named(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("strategy: technical\n")
    assert trader("backtest", "--config", cfg, "--out", tmp_path) == 2
    err = capsys.readouterr().err
    assert "trader backtest: error: missing --prices, --index, --start, --end" in err


def test_the_help_shows_a_config_file_example(capsys):
    with pytest.raises(SystemExit):
        trader("backtest", "--help")
    text = capsys.readouterr().out
    assert "trader backtest --config run.yaml" in text and "market-caps: data/kr_market_snapshot_daily.parquet" in text


def test_an_sqlite_tracking_uri_keeps_artifacts_beside_its_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    (tmp_path / "store").mkdir()
    report = tmp_path / "report.html"
    report.write_text("<html></html>")
    run_id = T.track_run(T.RunRecord(T.BACKTEST, "x", params={"strategy": "x"}, artifacts=[report]))
    assert run_id is not None
    assert (tmp_path / "store" / "artifacts").is_dir() and not (tmp_path / "mlruns").exists()


@pytest.mark.slow  # the report step backtests its baselines over three folds (~tens of seconds)
def test_rl_walk_forward_results_are_tracked_one_run_per_algo_fold_and_seed(store, tmp_path):
    from training import walkforward as W

    # a finished trial as Ray Tune leaves it: the last line of result.json holds its config and metrics
    trial = tmp_path / "tune" / "walkforward-dqn" / "trial_0"
    trial.mkdir(parents=True)
    metrics = {"val_sharpe": 0.4, "val_history": [0.1, 0.4], "test_sharpe": -0.2, "test_return": -0.03,
               "test_max_drawdown": -0.12, "test_turnover": 9.5, "test_action_share": [0.5, 0.5]}
    trial.joinpath("result.json").write_text(json.dumps({"config": {"algo": "dqn", "fold": 1, "seed": 2},
                                                         **metrics, "time_total_s": 12.0}) + "\n")
    out = tmp_path / "wf.json"
    assert W.main(["--from-results", "--storage", str(tmp_path / "tune"), "--json", str(out),
                   "--tables", str(tmp_path / "wf.md"), "--iters", "8"]) == 0
    c = R.client(R.default_tracking_uri())
    exp = c.get_experiment_by_name(T.WALK_FORWARD)
    (run,) = c.search_runs([exp.experiment_id], filter_string="attributes.run_name = 'dqn fold 1 seed 2'",
                           max_results=1, order_by=["attributes.start_time DESC"])
    p = run.data.params
    assert p["algo"] == "dqn" and p["seed"] == "2" and p["iters"] == "8" and p["span"] == "2019-01-01..2020-12-31"
    assert len(p["data.prices.sha256"]) == 64 and "costs.commission_rate" in p and p["git_sha"] == R.git_sha()
    assert run.data.metrics["test_sharpe"] == pytest.approx(-0.2) and "val_history" not in run.data.metrics
    assert {"wf.json", "wf.md"} <= {a.path for a in c.list_artifacts(run.info.run_id)}
