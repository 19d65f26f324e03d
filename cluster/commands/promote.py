"""`trader promote`: move `champion` to the challenger only if it wins out of sample."""
from __future__ import annotations


def register(subparsers) -> None:
    from training.registry import DEFAULT_DIR

    p = subparsers.add_parser("promote", help="promote models:/agent-<algo>@challenger to champion if it wins OOS")
    p.add_argument("--algo", default="dqn,appo", help="comma-separated: dqn, appo")
    p.add_argument("--start", help="out-of-sample start (default: day after both models' validation end)")
    p.add_argument("--end", help="out-of-sample end (default: last date in the data)")
    p.add_argument("--min-improvement", type=float, default=0.0, help="Sharpe margin the challenger needs")
    p.add_argument("--data-dir")
    p.add_argument("--mlflow-dir", default=str(DEFAULT_DIR), help="embedded store (MLFLOW_TRACKING_URI wins)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from training.promote import promote

    for algo in [a.strip() for a in args.algo.split(",") if a.strip()]:
        d = promote(algo, start=args.start, end=args.end, min_improvement=args.min_improvement,
                    data_dir=args.data_dir, mlflow_dir=args.mlflow_dir)
        print(f"agent-{algo}: {'PROMOTED' if d.promoted else 'kept champion'} — {d.reason}")
    return 0
