"""`trader status`: the cluster, the Serve app, the actors and the latest decisions, at a glance."""
from __future__ import annotations

import json
from pathlib import Path

from cluster.commands._common import add_settings_arg, apply_ray_env, new_parser, reports_errors, settings_from


def register(subparsers) -> None:
    p = new_parser(
        subparsers, "status", help="cluster, Serve app, actors and latest decisions",
        description="Show the Ray cluster's nodes and resources, the Serve applications and their "
                    "deployments, the live actors, and the latest decisions and account rows from the "
                    "journal (read-only). Each part reports on its own: no cluster still shows the journal.",
        example_lines=["trader status", "trader status --address auto --decisions 10",
                       "trader status --json > status.json"])
    p.add_argument("--address", help="Ray address (default: settings cluster.address, else 'auto')")
    p.add_argument("--decisions", type=int, default=5, help="how many latest decisions to show")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_settings_arg(p)
    p.set_defaults(func=main)


@reports_errors
def main(args) -> int:
    settings = settings_from(args)
    apply_ray_env(settings)
    report = {"cluster": cluster_status(args.address or settings.cluster.address or "auto")}
    if report["cluster"].get("connected"):
        report["serve"] = serve_status()
        report["actors"] = actor_status(report["cluster"]["gcs_address"])
    report["journal"] = journal_status(settings.journal, args.decisions)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)
    return 0


def cluster_status(address: str) -> dict:
    import ray
    try:
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # ConnectionError, auth errors: report, do not fail the whole command
        return {"connected": False, "address": address, "error": str(exc).splitlines()[0]}
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    import ray._private.worker as worker
    return {"connected": True, "address": address, "gcs_address": worker.global_worker.node.gcs_address,
            "nodes": [{"ip": n["NodeManagerAddress"], "head": "node:__internal_head__" in n["Resources"],
                       "cpus": n["Resources"].get("CPU", 0), "gpus": n["Resources"].get("GPU", 0)}
                      for n in nodes],
            "resources": ray.cluster_resources(), "available": ray.available_resources()}


def serve_status() -> dict:
    try:
        from ray import serve
        st = serve.status()
    except Exception as exc:
        return {"error": str(exc).splitlines()[0]}
    return {name: {"status": str(app.status.value if hasattr(app.status, "value") else app.status),
                   "route_prefix": getattr(app, "route_prefix", None),
                   "deployments": {d: str(ds.status.value if hasattr(ds.status, "value") else ds.status)
                                   for d, ds in app.deployments.items()}}
            for name, app in st.applications.items()}


def actor_status(gcs_address: str) -> list[dict]:
    try:
        from ray.util.state import list_actors
        actors = list_actors(address=gcs_address, filters=[("state", "=", "ALIVE")], limit=200,
                             raise_on_missing_output=False)
    except Exception as exc:
        return [{"error": str(exc).splitlines()[0]}]
    return [{"class": a.class_name, "name": a.name, "state": a.state, "pid": a.pid} for a in actors]


def journal_status(path: Path, n: int) -> dict:
    from broker.journal import Journal

    path = Path(path)
    if not path.exists():
        return {"path": str(path), "error": "no journal yet"}
    # read-only: never takes a write lock on the trading loop's journal; the latest run's rows
    journal = Journal(path, readonly=True)
    try:
        journal.run_id = run = journal.latest_run() or ""
        decisions = [{"day": r["day"], **json.loads(r["payload"])} for r in journal.decisions()[::-1][:n]]
        accounts = journal.accounts()
        counts = {"orders": journal.count("orders"), "fills": journal.count("fills")}
        control = journal.control()
    finally:
        journal.close()
    acct = accounts[-1] if accounts else None
    return {"path": str(path), "run_id": run, "decisions": decisions, **counts, "control": control,
            "account": None if acct is None else {k: acct[k] for k in ("day", "cash", "equity")}}


def print_report(report: dict) -> None:
    c = report["cluster"]
    if c.get("connected"):
        print(f"cluster {c['address']}: {len(c['nodes'])} node(s), CPU {c['available'].get('CPU', 0):g}/"
              f"{c['resources'].get('CPU', 0):g} free, GPU {c['resources'].get('GPU', 0):g}")
        for node in c["nodes"]:
            print(f"  {'head  ' if node['head'] else 'worker'} {node['ip']}  CPU {node['cpus']:g}  GPU {node['gpus']:g}")
        serve = report.get("serve", {})
        if "error" in serve:
            print(f"serve: {serve['error']}")
        elif not serve:
            print("serve: no application deployed (trader serve)")
        for name, app in serve.items() if "error" not in serve else ():
            deps = ", ".join(f"{d} {s}" for d, s in app["deployments"].items())
            print(f"serve app {name} [{app['status']}] {app['route_prefix'] or ''}: {deps}")
        actors = report.get("actors", [])
        print(f"actors: {len(actors)} alive")
        for a in actors[:30]:
            print(f"  {a.get('class') or a.get('error')}" + (f" ({a['name']})" if a.get("name") else ""))
    else:
        print(f"cluster: not reachable at {c['address']} ({c['error']})")
    j = report["journal"]
    if "error" in j:
        print(f"journal {j['path']}: {j['error']}")
        return
    acct = j["account"]
    print(f"journal {j['path']}: {j['orders']} orders, {j['fills']} fills" +
          (f"; {acct['day']} equity {acct['equity']:,.0f} KRW, cash {acct['cash']:,} KRW" if acct else ""))
    control = j.get("control") or {}
    if control.get("state", "ACTIVE") != "ACTIVE":
        print(f"  operator: {control['state']} since {control['at']} ({control['reason']}); `trader resume` lifts it")
    for d in j["decisions"]:
        regime = d.get("regime")
        regime_s = f" regime {regime}" if regime is not None else ""
        targets = d.get("targets") or {}
        top = ", ".join(f"{s} {w:.1%}" for s, w in sorted(targets.items(), key=lambda kv: -kv[1])[:5]) \
            if isinstance(targets, dict) else str(targets)[:80]
        print(f"  {d['day']}{regime_s}: {top}")
