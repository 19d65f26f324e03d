"""KisGateway: the one KIS session of an app key — token cache, rate limiter, REST client.

KIS counts the REST quota per app key (KIS_API.md §6: 18-20 calls/s real, 1-2/s VTS) and issues
a token at most once a minute (EGW00133). `bucket_for` is one limiter per *process*, so an
application whose market feed and execution loop run in two processes, each with its own
client, spends the budget twice and KIS answers EGW00201. The gateway is the session the whole
application shares: every REST call of the app key goes through its one `KisRest` — one token
cache, one token bucket, one connection pool (requests' pool reconnects a dropped connection on
the next call), one set of counters.

Plain Python, so it is testable without Ray; `actors/gateway.py` hosts it as the named
BrokerGateway actor and gives callers a `RestClient` over it (`GatewayRest`). What the gateway
does NOT do: decide anything about orders. KisBroker's order safety (journal first, an unknown
outcome looked up, never resent blindly) stays in KisBroker; the gateway only carries its calls,
with the same non-retry rule for orders (`idempotent=False`) that KisRest applies.
"""
from __future__ import annotations

from pathlib import Path

from broker.kis.auth import TokenCache
from broker.kis.config import Credentials, Environment
from broker.kis.rest import KisRest, Reply


class KisGateway:
    def __init__(self, env: Environment, credentials: Credentials, cache_dir: Path | str | None = None):
        self.env = env
        self.rest = KisRest(env, credentials, TokenCache(env, credentials, cache_dir))

    def __repr__(self) -> str:
        return f"KisGateway(env={self.env.name!r}, url={self.env.rest_url!r})"

    def request(self, method: str, path: str, tr_id: str, params: dict | None = None, body: dict | None = None,
                tr_cont: str = "", idempotent: bool = True, extra_headers: dict | None = None) -> Reply:
        """One logical KIS call, rate-limited with every other call of the app key (KisRest.request)."""
        return self.rest.request(method, path, tr_id, params=params, body=body, tr_cont=tr_cont,
                                 idempotent=idempotent, extra_headers=extra_headers)

    def hashkey(self, body: dict) -> str:
        return self.rest.hashkey(body)

    def stats(self) -> dict:
        """Counters of the session: requests sent, EGW00201 answers, token refreshes and issues."""
        return {**self.rest.stats, "tokens_issued": self.rest.tokens.issued_here,
                "rate_per_s": self.rest.bucket.rate, "burst": self.rest.bucket.burst}
