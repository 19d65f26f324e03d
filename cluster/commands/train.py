"""`trader train`: the RL hyper-parameter search (same entry point as `python -m training.tune`)."""
from __future__ import annotations


def register(subparsers) -> None:
    from training.tune import add_arguments

    p = subparsers.add_parser("train", help="train RL agents: Ray Tune + Optuna over DQN/APPO, logged to MLflow",
                              description="Search each algorithm's hyper-parameters (Optuna + ASHA) on the "
                                          "training window, score on the validation window's net-of-cost "
                                          "Sharpe, register the best as models:/agent-<algo>@challenger.")
    add_arguments(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from training.tune import run_from_args

    return run_from_args(args)
