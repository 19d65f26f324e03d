"""Decision latency and throughput for a 100-symbol universe, against a bare Serve echo.

    PYTHONPATH=. python bench/serve_latency.py [--seconds 10] [--clients 8] [--symbols 100]

On one local Ray (2 CPUs) it deploys, side by side:
* the echo: two deployments (an HTTP ingress that parses the JSON body and awaits a second
  deployment, which sends it back) — the least any two-hop Serve app costs;
* the real decision service (serving/app.py: Ensemble → AgentActors → Risk → state store) with
  the default agents, and a MarketStateActor holding the shipped data's 100 most traded symbols.
Then `--clients` threads send for `--seconds` each:
* echo over HTTP and through a DeploymentHandle (the same small body);
* our decision by reference (`{as_of, universe, market}`, what the trading loop sends) over HTTP
  and through a DeploymentHandle, on one bar (the members' answers for a universe and day are
  cached by their AgentActors, as for every run deciding that day; the combination, sizing and
  answer are computed per request) — the numbers of the final line;
* the same by reference with the day rotating over 40 bars (every request a member computation);
* the old request: the whole snapshot in the body (≈ 1 MB of JSON for 100 symbols).
Stateless decisions (the service secret): no run state is read or written.

Ends with `http p50 ratio X, throughput ratio Y` (ours by reference / the echo, both over HTTP,
measured in this run). The machine is shared: read ratios, not absolute times.
"""
# no `from __future__ import annotations`: FastAPI must see the echo route's real Request type
import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import requests
from fastapi import FastAPI, Request

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def measure(call, bodies: list, seconds: float, clients: int) -> dict:
    """`clients` threads call `call(body)` (bodies in turn) for `seconds`; latency and rate."""
    lat: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def worker(k: int):
        i = k
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                call(bodies[i % len(bodies)])
                ok = None
            except Exception as exc:  # counted, not fatal: a benchmark reports its errors
                ok = f"{type(exc).__name__}: {str(exc)[:200]}"
            took = time.perf_counter() - t0
            with lock:
                lat.append(took) if ok is None else errors.append(ok)
            i += clients

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    a = np.array(lat) if lat else np.array([np.nan])
    return {"n": len(lat), "errors": len(errors), "first_error": errors[0] if errors else None,
            "per_s": len(lat) / wall, "p50": float(np.percentile(a, 50) * 1000), "p99": float(np.percentile(a, 99) * 1000)}


def http_call(url: str, headers: dict):
    local = threading.local()

    def call(body):
        if not hasattr(local, "session"):   # one keep-alive connection per client thread
            local.session = requests.Session()
        r = local.session.post(url, data=body, headers=headers, timeout=120)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
    return call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--symbols", type=int, default=100)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from actors import NAMESPACE
    from actors.market_state import MarketStateActor, market_actor_name
    from cluster.trading_loop import ReplayConfig, deploy_decision_service, free_port
    from market.data import load_panel
    from serving.auth import load_secret

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             namespace=NAMESPACE)
    port = free_port()
    secret = load_secret()
    auth = f"Bearer {secret.reveal()}"
    headers = {"Authorization": auth, "Content-Type": "application/json"}

    echo_api = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class EchoInner:
        def echo(self, body: dict) -> dict:
            return body

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    @serve.ingress(echo_api)
    class EchoIngress:
        def __init__(self, inner):
            self.inner = inner

        @echo_api.post("/echo")
        async def http(self, request: Request) -> dict:
            return await self.inner.echo.remote(await request.json())

        async def echo(self, body: dict) -> dict:
            return await self.inner.echo.remote(body)

    try:
        url = deploy_decision_service(ReplayConfig(out=Path(".")).agents, port, rl_champions=False)
        serve.run(EchoIngress.bind(EchoInner.bind()), name="echo", route_prefix="/bench-echo")  # type: ignore[attr-defined]
        echo_url = f"http://127.0.0.1:{port}/bench-echo/echo"
        ours, echo = serve.get_app_handle("trader"), serve.get_app_handle("echo")

        full = load_panel()
        lookback = int(requests.get(url.replace("/v1/decide", "/healthz"), timeout=120).json()["lookback"])
        # the most traded symbols listed on the last bar (a few have gaps in the lookback: listed later)
        value = np.nansum(full.close[-120:] * np.nan_to_num(full.volume[-120:]), axis=0)
        listed = [j for j in np.argsort(-value, kind="stable") if np.isfinite(full.close[-1, j])]
        universe = sorted(full.symbols[j] for j in listed[:args.symbols])
        panel = full.select(universe)
        # the handle is kept: an actor nobody references dies
        market = MarketStateActor.options(name=market_actor_name("bench"), namespace=NAMESPACE).remote(
            panel, len(panel) - 1, None)
        ray.get(market.today.remote())
        days = [panel.date(i).isoformat() for i in range(len(panel) - 40, len(panel))]
        by_ref = [{"as_of": d, "universe": universe, "market": "bench"} for d in days]
        by_value = {"as_of": days[-1], "bars": panel.tail(lookback).to_dict()}
        one = json.dumps(by_ref[-1])
        print(f"machine: {os.cpu_count()} cores (shared; expect noise); {args.clients} clients, {args.seconds:g} s "
              f"each; universe {len(universe)} symbols, lookback {lookback} bars; request by reference "
              f"{len(one):,} bytes, with the snapshot {len(json.dumps(by_value)):,} bytes")

        r = requests.post(echo_url, data=one, headers=headers, timeout=60)
        assert r.status_code == 200, r.text[:300]
        t0 = time.perf_counter()
        for body in by_ref:  # warm-up: every member has answered each day once, every path is live
            r = requests.post(url, data=json.dumps(body), headers=headers, timeout=300)
            assert r.status_code == 200, r.text[:300]
        print(f"warm-up: {len(by_ref)} first decisions (members compute each day) in {time.perf_counter() - t0:.1f} s")

        def handle_call(handle, method, *extra):
            return lambda body: getattr(handle, method).remote(json.loads(body), *extra).result(timeout_s=120)

        runs = {
            "echo http": (http_call(echo_url, headers), [one]),
            "echo handle": (handle_call(echo, "echo"), [one]),
            "ours http, by reference, one bar": (http_call(url, headers), [one]),
            "ours handle, by reference, one bar": (handle_call(ours, "decide_from_handle", auth), [one]),
            "ours http, by reference, 40 bars rotating": (http_call(url, headers), [json.dumps(b) for b in by_ref]),
            "ours http, snapshot in the body": (http_call(url, headers), [json.dumps(by_value)]),
        }
        results = {}
        for name, (call, bodies) in runs.items():
            r = results[name] = measure(call, bodies, args.seconds, args.clients)
            print(f"{name:44s} {r['n']:6d} answers  {r['per_s']:7.1f}/s  p50 {r['p50']:8.1f} ms  "
                  f"p99 {r['p99']:8.1f} ms  errors {r['errors']}" + (f"  ({r['first_error']})" if r["errors"] else ""))
        e, o = results["echo http"], results["ours http, by reference, one bar"]
        eh, oh = results["echo handle"], results["ours handle, by reference, one bar"]
        print(f"handle p50 ratio {oh['p50'] / eh['p50']:.2f}, throughput ratio {oh['per_s'] / eh['per_s']:.2f}")
        print(f"http p50 ratio {o['p50'] / e['p50']:.2f}, throughput ratio {o['per_s'] / e['per_s']:.2f}")
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
