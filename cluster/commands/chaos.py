"""`trader chaos`: a fault campaign against the real-time loop (cluster/chaos.py)."""
from __future__ import annotations

import json
from pathlib import Path

from cluster.commands._common import CommandError, new_parser, reports_errors


def register(subparsers) -> None:
    p = new_parser(
        subparsers, "chaos", help="fault campaign: the real-time loop against the simulator with faults and kills",
        description="Run the real-time loop (vts mode, fast time) against the local KIS-protocol simulator while "
                    "injecting the simulator's REST faults, killing the execution actor, the market actor or a "
                    "Serve replica at random, and SIGKILLing the driver process itself (its own embedded Ray; the "
                    "simulator lives in this process); then compare journal, order-id map and venue. Ends with the "
                    "line `orders N, lost L, duplicated D, fills lost F, position diff P, cash diff C`; exit 0 only "
                    "when L, D, F, P and C are all 0 and no process of a killed driver outlived it.",
        example_lines=["trader chaos --sessions 5 --seed 1",
                       "trader chaos --sessions 200 --seed 7 --kill-every 10 --fault-every 0.5 --driver-kill-every 40 "
                       "--out reports/chaos"])
    p.add_argument("--sessions", type=int, default=5, help="trading sessions to run (the last N days of the data)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault and kill schedule")
    p.add_argument("--kill-every", type=float, default=4.0,
                   help="mean seconds between two kills of an actor (0: no kills)")
    p.add_argument("--driver-kill-every", type=float, default=40.0,
                   help="mean sessions a driver trades before the campaign SIGKILLs it (0: never)")
    p.add_argument("--fault-every", type=float, default=0.5,
                   help="mean seconds between two armed faults (0: no faults)")
    p.add_argument("--out", type=Path, default=Path("reports/chaos"), help="folder for journal, id map, result")
    p.set_defaults(func=main)


@reports_errors
def main(args) -> int:
    from cluster.chaos import ChaosConfig, run_campaign

    for name, unit in (("kill_every", "seconds"), ("fault_every", "seconds"), ("driver_kill_every", "sessions")):
        if getattr(args, name) < 0:
            raise CommandError(f"--{name.replace('_', '-')} must be >= 0 {unit}, got {getattr(args, name)}")
    try:
        result = run_campaign(ChaosConfig(out=args.out, sessions=args.sessions, seed=args.seed,
                                          kill_every_s=args.kill_every, fault_every_s=args.fault_every,
                                          driver_kill_every=args.driver_kill_every))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    summary = {"sessions": result.sessions, "segments": result.segments, "calm_segments": result.calm_segments,
               "drivers": result.drivers, "kills": dict(result.kills), "survivors": result.survivors,
               "faults": dict(result.faults), "segment_failures": dict(result.failures), **result.details}
    (Path(args.out) / "chaos.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    calm = f" ({result.calm_segments} calm, after the fault budget)" if result.calm_segments else ""
    print(f"{result.sessions} sessions in {result.segments} segments{calm} over {result.drivers} drivers; "
          f"kills {dict(result.kills)}; faults armed {sum(result.faults.values())}; "
          f"segments cut by {dict(result.failures)}")
    print(f"driver kills {result.kills.get('driver', 0)}: "
          + (f"{len(result.survivors)} process(es) outlived their driver: {result.survivors[:5]}" if result.survivors
             else "no process of a killed driver outlived it"))
    print(result.line())
    return 0 if result.ok else 1
