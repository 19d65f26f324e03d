"""`trader train` / `trader promote` argument handling and the dqn/appo strategy entries (no Ray)."""
from __future__ import annotations

import argparse

import pytest

from cluster.commands import promote as promote_cmd
from cluster.commands import train as train_cmd
from strategies.registry import STRATEGIES, StrategyContext
from training.tune import SearchOptions, options_from_args


def parser():
    p = argparse.ArgumentParser(prog="trader")
    sub = p.add_subparsers(dest="command")
    train_cmd.register(sub)
    promote_cmd.register(sub)
    return p


def test_train_smoke_options():
    args = parser().parse_args(["train", "--algo", "dqn,appo", "--smoke", "--val-end", "2018-06-30"])
    opts = options_from_args(args)
    assert opts.algos == ("dqn", "appo") and opts.preset == "smoke"
    assert opts.num_samples == 2 and opts.seeds == 2 and opts.windows.val_end == "2018-06-30"
    full = options_from_args(parser().parse_args(["train", "--algo", "dqn", "--num-samples", "12"]))
    assert full.preset == SearchOptions().preset and full.num_samples == 12


def test_train_rejects_a3c_and_bad_windows():
    with pytest.raises(ValueError, match="A3C"):
        options_from_args(parser().parse_args(["train", "--algo", "a3c"]))
    with pytest.raises(ValueError, match="ordered"):
        options_from_args(parser().parse_args(["train", "--val-start", "2010-01-01"]))


def test_promote_arguments():
    args = parser().parse_args(["promote", "--algo", "dqn", "--min-improvement", "0.1"])
    assert args.algo == "dqn" and args.min_improvement == 0.1 and callable(args.func)


def test_rl_strategies_registered_and_context_backward_compatible():
    assert {"dqn", "appo", "technical"} <= set(STRATEGIES)
    ctx = StrategyContext()
    assert ctx.seed == 0 and ctx.model is None
    assert StrategyContext(seed=3).seed == 3


def test_trader_cli_has_train_and_promote():
    from cluster.cli import build_parser

    args = build_parser().parse_args(["train", "--algo", "appo", "--smoke"])
    assert args.command == "train" and options_from_args(args).algos == ("appo",)
    assert build_parser().parse_args(["promote"]).command == "promote"
