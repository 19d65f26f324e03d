"""KIS client benchmarks against the local simulator (one run, peers measured side by side).

1. REST: requests per second the client sustains while respecting its configured limit, as a
   ratio of that limit (1.0 = the limit is fully used; > 1 would break it). The simulator
   enforces the same quota, so any EGW00201 it answers is counted too.
2. WebSocket: H0STCNT0 frames parsed per second by broker.kis.ws.parse_frame (records as
   field-named dicts, validated counts) vs a naive str.split baseline (lists, no checks), and
   AES notice decryption per second.

    /work/main/.venv/bin/python bench/kis_client.py [--seconds 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker.kis import quotes  # noqa: E402
from broker.kis.auth import TokenCache  # noqa: E402
from broker.kis.config import Credentials  # noqa: E402
from broker.kis.rest import KisRest  # noqa: E402
from broker.kis.ws import aes_encrypt, parse_frame  # noqa: E402
from broker.sim.exchange import SimConfig  # noqa: E402
from broker.sim.server import SimServer  # noqa: E402

TRADE = ("005930^101532^87600^2^200^0.23^87552.31^87500^88000^87100^87700^87600^35^9876543^864714154464^21345^"
         "23456^2111^104.52^4823101^5041210^1^51.11^46.95^090000^2^100^093412^5^-400^090517^2^500^20240710^20^N^"
         "152340^98765^1234567^987654^0.17^8765432^112.67^0^^87400")


def bench_rest(limit: float, seconds: float, history) -> dict:
    with SimServer(SimConfig(rate_per_s=limit, burst=2, token_throttle_s=0.2), history=history) as sim:
        c = sim.add_account(1_000_000)
        cred = Credentials(c["KIS_APP_KEY"], c["KIS_APP_SECRET"], c["KIS_ACCOUNT"])
        env = sim.environment(rate_per_s=limit, burst=1)
        rest = KisRest(env, cred, TokenCache(env, cred, cache_dir=tempfile.mkdtemp()))
        quotes.current_price(rest, "005930")          # token + warm connection
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            quotes.current_price(rest, "005930")
            n += 1
        elapsed = time.perf_counter() - t0
        return {"limit": limit, "requests": n, "rps": n / elapsed, "ratio": n / elapsed / limit,
                "egw00201": sim.exchange.counts["rate_limited"]}


def naive_parse(text: str, n_fields: int = 46):
    parts = text.split("|")
    fields = parts[3].split("^")
    count = int(parts[2])
    return [fields[i * n_fields:(i + 1) * n_fields] for i in range(count)]


def bench_ws(seconds: float) -> dict:
    frame = "0|H0STCNT0|010|" + "^".join([TRADE] * 10)
    out = {}
    for name, fn in (("parse_frame", parse_frame), ("naive_split", naive_parse)):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(200):
                fn(frame)
            n += 200
        out[name] = n / (time.perf_counter() - t0)
    key, iv = "k" * 32, "i" * 16
    notice = "1|H0STCNI9|001|" + aes_encrypt("^".join(["x"] * 26), key, iv)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(200):
            parse_frame(notice, {"H0STCNI9": (key, iv)})
        n += 200
    out["notice_decrypt"] = n / (time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    from tests.integration.kis_helpers import history

    hist = history()
    print("REST (inquire-price against the simulator, client limit = simulator quota)")
    for limit in (18.0, 100.0, 400.0):
        r = bench_rest(limit, args.seconds, hist)
        print(f"  limit {r['limit']:6.0f}/s: sustained {r['rps']:7.1f} req/s  ratio to limit {r['ratio']:.3f}  "
              f"({r['requests']} requests, EGW00201 answered: {r['egw00201']})")
    w = bench_ws(args.seconds)
    print("WebSocket (H0STCNT0 frame of 10 records)")
    print(f"  parse_frame   {w['parse_frame']:10.0f} frames/s ({w['parse_frame'] * 10:.0f} records/s)")
    print(f"  naive split   {w['naive_split']:10.0f} frames/s")
    print(f"  ratio parse_frame / naive = {w['parse_frame'] / w['naive_split']:.2f}")
    print(f"  encrypted notice (AES-256-CBC + parse) {w['notice_decrypt']:.0f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
