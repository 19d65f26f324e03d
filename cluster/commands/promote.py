"""`trader promote`: move `champion` to the challenger only if it wins out of sample."""
from __future__ import annotations

from cluster.commands._common import EXIT_OK, CommandError, new_parser, reports_errors


def register(subparsers) -> None:
    from training.registry import DEFAULT_DIR

    p = new_parser(subparsers, "promote", help="promote models:/agent-<algo>@challenger (forecaster-lgbm) to champion if it wins OOS",
                   description="Backtest the challenger and the champion of each algorithm on the same "
                               "out-of-sample span; the challenger becomes champion only if its Sharpe beats "
                               "the champion's by --min-improvement.",
                   example_lines=["trader promote                           # dqn and appo, default span",
                                  "trader promote --algo dqn --min-improvement 0.1",
                                  "trader promote --algo lgbm                # forecaster-lgbm, on Rank IC"])
    p.add_argument("--algo", default="dqn,appo", help="comma-separated: dqn, appo, lgbm (forecaster-lgbm)")
    p.add_argument("--start", help="out-of-sample start (default: day after both models' validation end)")
    p.add_argument("--end", help="out-of-sample end (default: last date in the data)")
    p.add_argument("--min-improvement", type=float, default=0.0, help="Sharpe margin the challenger needs")
    p.add_argument("--data-dir")
    p.add_argument("--mlflow-dir", default=str(DEFAULT_DIR), help="embedded store (MLFLOW_TRACKING_URI wins)")
    p.set_defaults(func=_run)


@reports_errors
def _run(args) -> int:
    from backtest.cli import unknown_name
    from strategies.registry import RL_ALGOS
    from training.promote import promote
    from training.registry import FORECASTERS, model_name

    algos = [a.strip() for a in args.algo.split(",") if a.strip()]
    known = list(RL_ALGOS) + list(FORECASTERS)
    for algo in algos:
        if algo not in known:
            raise CommandError(unknown_name("algorithm", algo, known))
    for algo in algos:
        d = promote(algo, start=args.start, end=args.end, min_improvement=args.min_improvement,
                    data_dir=args.data_dir, mlflow_dir=args.mlflow_dir)
        print(f"{model_name(algo)}: {'PROMOTED' if d.promoted else 'kept champion'} — {d.reason}")
    return EXIT_OK
