"""`trader chaos`: a fault campaign against the real-time loop (cluster/chaos.py)."""
from __future__ import annotations

import json
from pathlib import Path

from cluster.commands._common import CommandError, new_parser, reports_errors


def register(subparsers) -> None:
    p = new_parser(
        subparsers, "chaos", help="fault campaign: the real-time loop against the simulator with faults and kills",
        description="Run the real-time loop (vts mode, fast time) against the local KIS-protocol simulator while "
                    "injecting the simulator's REST faults and killing the execution actor, the market actor or a "
                    "Serve replica at random; then compare journal, order-id map and venue. Ends with the line "
                    "`orders N, lost L, duplicated D, fills lost F, position diff P, cash diff C`; exit 0 only "
                    "when L, D, F, P and C are all 0.",
        example_lines=["trader chaos --sessions 5 --seed 1",
                       "trader chaos --sessions 200 --seed 7 --kill-rate 0.7 --out reports/chaos"])
    p.add_argument("--sessions", type=int, default=5, help="trading sessions to run (the last N days of the data)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault and kill schedule")
    p.add_argument("--kill-rate", type=float, default=0.5, help="chance that a segment of the loop is killed")
    p.add_argument("--faults", type=int, default=3, help="faults armed per segment")
    p.add_argument("--out", type=Path, default=Path("reports/chaos"), help="folder for journal, id map, result")
    p.set_defaults(func=main)


@reports_errors
def main(args) -> int:
    from cluster.chaos import ChaosConfig, run_campaign

    if not 0.0 <= args.kill_rate <= 1.0:
        raise CommandError(f"--kill-rate must be between 0 and 1, got {args.kill_rate}")
    try:
        result = run_campaign(ChaosConfig(out=args.out, sessions=args.sessions, seed=args.seed,
                                          kill_rate=args.kill_rate, faults_per_segment=args.faults))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    summary = {"sessions": result.sessions, "segments": result.segments, "kills": dict(result.kills),
               "faults": dict(result.faults), "segment_failures": dict(result.failures), **result.details}
    (Path(args.out) / "chaos.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    print(f"{result.sessions} sessions in {result.segments} segments; kills {dict(result.kills)}; "
          f"faults armed {sum(result.faults.values())}; segments cut by {dict(result.failures)}")
    print(result.line())
    return 0 if result.ok else 1
