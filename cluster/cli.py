"""`trader`: the command line. Each subcommand lives in its own module under cluster/commands/.

A command module exposes `register(subparsers)`, which adds its parser and sets `func` to a
callable taking the parsed args and returning an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys

import training.strategies  # noqa: F401  (plugs the RL agents into the strategy registry)

COMMAND_MODULES = [
    "cluster.commands.demo",
    "cluster.commands.backtest",
    "cluster.commands.strategies",
    "cluster.commands.lookahead",
    "cluster.commands.parity",
    "cluster.commands.data",
    "cluster.commands.train",
    "cluster.commands.promote",
    "cluster.commands.up",
    "cluster.commands.down",
    "cluster.commands.submit",
    "cluster.commands.serve",
    "cluster.commands.run",
    "cluster.commands.halt",
    "cluster.commands.status",
    "cluster.commands.chaos",
    "cluster.commands.dashboard",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trader",
        description="kis-ray-trader: an AI trading system for Korean stocks on Ray, trading through KIS.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
