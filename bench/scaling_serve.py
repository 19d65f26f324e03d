"""Serve decisions per second with 1 and 2 replicas of the Ensemble deployment.

    /work/main/.venv/bin/python bench/scaling_serve.py [--seconds 20] [--clients 8]

Deploys the real decision service (serving.app: Ensemble → AgentActor → Risk) on a local Ray
with 2 CPUs, then `--clients` threads POST /v1/decide (a 61-bar, 8-symbol snapshot of the
shipped data) for `--seconds`; the same for 2 replicas, redeployed in place. Prints decisions/s,
p50/p99 latency and the 2-replica/1-replica ratio measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SYMBOLS = ["005930", "000660", "035420", "005380", "051910", "006400", "035720", "068270"]


def body() -> dict:
    from market.data import load_panel
    w = load_panel(symbols=SYMBOLS, start="2023-06-01", end="2023-12-28").tail(61)
    return {"as_of": str(w.date(len(w) - 1)), "bars": w.to_dict()}


def _auth() -> dict:
    from serving.auth import load_secret

    return {"Authorization": f"Bearer {load_secret().reveal()}"}  # stateless decisions: no run's state


AUTH = _auth()


def load(url: str, payload: dict, seconds: float, clients: int) -> dict:
    lat: list[float] = []
    errors = [0]
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def worker():
        s = requests.Session()
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            r = s.post(url, json=payload, headers=AUTH, timeout=60)
            dt = time.perf_counter() - t0
            with lock:
                (lat.append(dt) if r.status_code == 200 else errors.__setitem__(0, errors[0] + 1))

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    a = np.array(lat)
    return {"n": len(a), "errors": errors[0], "per_s": len(a) / wall, "p50": np.percentile(a, 50) * 1000,
            "p99": np.percentile(a, 99) * 1000}


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
            r = load(url, payload, args.seconds, args.clients)
            results[replicas] = r
            print(f"Serve {replicas} replica(s): {r['n']} decisions, {r['per_s']:.1f}/s, p50 {r['p50']:.0f} ms, "
                  f"p99 {r['p99']:.0f} ms, errors {r['errors']}"
                  + (f"  (x{r['per_s'] / results[1]['per_s']:.2f} vs 1 replica)" if replicas > 1 else ""))
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
