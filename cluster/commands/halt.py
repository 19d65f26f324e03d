"""`trader halt` / `trader resume`: the operator's trading state, written to the journal.

The trading loop reads it before each bar's orders (broker/risk_engine.py's trading-state guard),
so it acts on a loop that is running, on every process that trades into the journal, and after a
restart, without any connection to the loop itself.
"""
from __future__ import annotations

from cluster.commands._common import CommandError, add_settings_arg, new_parser, reports_errors, settings_from


def register(subparsers) -> None:
    p = new_parser(
        subparsers, "halt", help="stop the trading loop's orders (kept in the journal: survives a restart)",
        description="Set the operator's trading state in the journal: HALTED (default) sends no order "
                    "at all; --reduce-only (REDUCING) lets only orders that shrink a position out. The "
                    "running loop obeys from its next bar; `trader resume` lifts it.",
        example_lines=["trader halt --reason 'broker maintenance'",
                       "trader halt --reduce-only --reason 'cut risk into the election'",
                       "trader halt --run vts1a2b3c4d --reason 'this account only'"])
    p.add_argument("--reason", required=True, help="why (journaled, shown by `trader status`)")
    p.add_argument("--reduce-only", action="store_true", help="REDUCING: only orders that shrink a position")
    p.add_argument("--run", default="*", help="one run id (default: every run trading into the journal)")
    add_settings_arg(p)
    p.set_defaults(func=halt)

    r = new_parser(
        subparsers, "resume", help="lift `trader halt`: the loop trades again from its next bar",
        description="Set the operator's trading state in the journal back to ACTIVE. The decision's own "
                    "drawdown state still applies (a HALTED book stays flat until the service lifts it).",
        example_lines=["trader resume --reason 'maintenance over'"])
    r.add_argument("--reason", default="resumed by operator", help="why (journaled)")
    r.add_argument("--run", default="*", help="one run id (default: every run)")
    add_settings_arg(r)
    r.set_defaults(func=resume)


@reports_errors
def halt(args) -> int:
    return set_state(args, "REDUCING" if args.reduce_only else "HALTED")


@reports_errors
def resume(args) -> int:
    return set_state(args, "ACTIVE")


def set_state(args, state: str) -> int:
    from broker.journal import Journal, JournalError

    settings = settings_from(args)
    if not args.reason.strip():
        raise CommandError("--reason must say why")
    try:
        journal = Journal(settings.journal)
    except JournalError as exc:
        raise CommandError(str(exc)) from None
    try:
        journal.set_control(state, args.reason.strip(), run_id=args.run)
        now = journal.control(None if args.run == "*" else args.run)
    finally:
        journal.close()
    who = "every run" if args.run == "*" else f"run {args.run}"
    print(f"trading state {now['state']} for {who} in {settings.journal}: {now['reason']}")
    return 0
