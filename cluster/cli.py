"""`trader`: the command line. Each subcommand lives in its own module under cluster/commands/.

A command module exposes `register(subparsers)`, which adds its parser (cluster.commands._common
.new_parser: examples in --help) and sets `func` to a callable taking the parsed args and
returning an exit code.

One voice for every command: errors are `trader <command>: error: <message>` on stderr; exit 2
for usage and input errors (argparse's own, CommandError, bad data files), 1 for a runtime
failure (the traceback is printed only with KRT_TRACEBACK=1), 130 for Ctrl-C.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
import sys
import traceback

import training.strategies  # noqa: F401  (plugs the RL agents into the strategy registry)
from cluster.commands._common import EXIT_RUNTIME, EXIT_USAGE, error_line

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


class TraderParser(argparse.ArgumentParser):
    """argparse with a "did you mean" for a mistyped command or choice (`trader bactest`)."""

    def error(self, message: str):
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:
            choices = re.findall(r"'([^']*)'", wrong.group(2)) or [c.strip() for c in wrong.group(2).split(",")]
            close = difflib.get_close_matches(wrong.group(1), choices, n=3, cutoff=0.5)
            if close:
                message += f"; did you mean {' or '.join(close)}?"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = TraderParser(
        prog="trader",
        description="kis-ray-trader: an AI trading system for Korean stocks on Ray, trading through KIS.",
        epilog="examples:\n  trader demo --days 60\n  trader strategies\n"
               "  trader backtest --strategy factor --prices data/kr_stocks_daily.parquet "
               "--index data/kr_index_daily.parquet --start 2022-01-03 --end 2023-12-28 --out reports/factor\n"
               "  trader <command> --help",
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
        return EXIT_USAGE
    command = getattr(args, "command_name", None) or args.command
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(error_line(command, "interrupted"), file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001  (the top-level boundary: a runtime failure is one line, exit 1)
        if os.environ.get("KRT_TRACEBACK"):
            traceback.print_exc()
        print(error_line(command, f"{type(exc).__name__}: {exc}"
                         + ("" if os.environ.get("KRT_TRACEBACK") else "  (KRT_TRACEBACK=1 shows the traceback)")),
              file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
