"""Serve decisions per second with 1 and 2 replicas of the Ensemble deployment.

    /work/main/.venv/bin/python bench/scaling_serve.py [--seconds 20] [--clients 8]

Deploys the real decision service (serving.app: Ensemble → AgentActor → Risk) on a local Ray
with 2 CPUs, then `--clients` threads POST /v1/decide (a 61-bar, 8-symbol snapshot of the
shipped data) for `--seconds`; the same for 2 replicas, redeployed in place. Prints decisions/s,
p50/p99 latency and the 2-replica/1-replica ratio measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serve_latency import http_call, measure  # noqa: E402  (bench/ is the script's own directory)

SYMBOLS = ["005930", "000660", "035420", "005380", "051910", "006400", "035720", "068270"]


def body() -> dict:
    from market.data import load_panel
    w = load_panel(symbols=SYMBOLS, start="2023-06-01", end="2023-12-28").tail(61)
    return {"as_of": str(w.date(len(w) - 1)), "bars": w.to_dict()}


def _auth() -> dict:
    from serving.auth import load_secret

    return {"Authorization": f"Bearer {load_secret().reveal()}"}  # stateless decisions: no run's state


AUTH = _auth()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from cluster.commands.serve import deploy
    from cluster.settings import load_settings
    from cluster.trading_loop import free_port

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    payload = body()
    base_settings = load_settings(None, environ={}, dotenv=None)
    port = free_port()
    print(f"machine: {os.cpu_count()} cores (shared; expect noise); {args.clients} clients, {args.seconds:g} s each")
    results = {}
    try:
        for replicas in (1, 2):
            s = base_settings.model_copy(update={"serve": base_settings.serve.model_copy(
                update={"port": port, "replicas": replicas})})
            url = deploy(s) + "/v1/decide"
            for _ in range(20):  # warm-up: every replica answers
                assert requests.post(url, json=payload, headers=AUTH, timeout=60).status_code == 200
            r = measure(http_call(url, {**AUTH, "Content-Type": "application/json"}), [json.dumps(payload)],
                        args.seconds, args.clients)
            results[replicas] = r
            print(f"Serve {replicas} replica(s): {r['n']} decisions, {r['per_s']:.1f}/s, p50 {r['p50']:.0f} ms, "
                  f"p99 {r['p99']:.0f} ms, errors {r['errors']}"
                  + (f"  (x{r['per_s'] / results[1]['per_s']:.2f} vs 1 replica)" if replicas > 1 else ""))
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
