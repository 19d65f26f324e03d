"""`trader train`: the hyper-parameter searches (same entry point as `python -m training.tune`): the RL
agents' (training/tune.py) and the lgbm forecaster's (`--algo lgbm`, training/forecasters.py)."""
from __future__ import annotations

from cluster.commands._common import new_parser, reports_errors


def register(subparsers) -> None:
    from training.tune import add_arguments

    p = new_parser(subparsers, "train", help="train RL agents (DQN/APPO) or the lgbm forecaster: Ray Tune + Optuna, logged to MLflow",
                   description="Search each algorithm's hyper-parameters (Optuna + ASHA) on the training window, "
                               "score on the validation window's net-of-cost Sharpe, register the best as "
                               "models:/agent-<algo>@challenger.",
                   example_lines=["trader train --smoke                     # a tiny but complete search",
                                  "trader train --algo dqn --num-samples 20",
                                  "trader train --algo lgbm --trials 8      # forecaster-lgbm, on validation Rank IC",
                                  "trader promote                           # then promote a winner"])
    add_arguments(p)
    p.set_defaults(func=_run)


@reports_errors
def _run(args) -> int:
    from training.tune import run_from_args

    return run_from_args(args)
