"""BrokerGateway: the named Ray actor that holds an app key's one KIS session (broker/kis/gateway.py).

Every actor of an application that talks to KIS — the market feed (actors/live_market.py
KisDailyBars) and the execution loop (actors/execution.py, KisBroker inside KisVenue) — finds the
same gateway by name, one per (environment, REST host, app key), and sends its REST calls
through it as a `GatewayRest`, the `RestClient` the TR modules and KisBroker already take. So the
application has one token cache, one rate limiter and one connection pool per app key, whichever
process or node its actors run on.

* Named from a hash of the key (the name shows in the dashboard), detached: it outlives whichever
  actor asked first, so a killed market or execution actor never takes the session down with it.
  `close_gateway` ends it (the live loop does, at its end).
* REST calls one at a time (the default concurrency group): they queue in arrival order in front
  of the token bucket. Live-quote reads (`live_quote`, `stale`, ...) have a group of their own,
  so a market actor asking for the touch never waits behind a rate-limited REST call.
* The WebSocket session (`watch`, and the account's execution notices, `take_notices`) lives in
  the gateway too: KIS allows one per app key.
* A KIS error travels back as a value and is raised again in the caller as the same type, so
  KisBroker's handling (a refusal → REJECTED, a lost answer → look the order up) is unchanged.
* The gateway dying mid-call is a lost answer: an order gets KisTransportError (its outcome is
  unknown; KisBroker looks it up, never resends blindly); a query is tried again (Ray restarts
  the actor; calls are never retried by Ray itself, `max_task_retries=0`).
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import ray

from actors import NAMESPACE
from broker.kis.auth import default_cache_dir
from broker.kis.config import Credentials, Environment
from broker.kis.errors import KisError, KisTransportError
from broker.kis.gateway import KisGateway
from broker.kis.rest import Reply, RestClient

# a query that finds the gateway restarting is tried again this often, waiting 0.25 s, 0.5 s, ...
# (about 8 s in all: an actor restart on a busy machine takes seconds)
QUERY_ATTEMPTS = 6
FIRST_WAIT_S = 0.25


class BrokerGateway(KisGateway):
    """The actor's face of KisGateway: a KIS error is returned instead of raised (raised, Ray
    would wrap it in a RayTaskError carrying the gateway's traceback); the callers' clients
    raise it again as it was."""

    def call(self, method: str, path: str, tr_id: str, params: dict | None, body: dict | None, tr_cont: str,
             idempotent: bool, extra_headers: dict | None) -> Reply | KisError:
        return _value_or_error(self.request, method, path, tr_id, params, body, tr_cont, idempotent, extra_headers)

    def hashkey_or_error(self, body: dict) -> str | KisError:
        return _value_or_error(self.hashkey, body)

    def watch_or_error(self, symbols: list[str], book: bool = True) -> int | KisError:
        return _value_or_error(self.watch, symbols, book)

    @ray.method(concurrency_group="quotes")
    def take_notices_or_error(self) -> list | KisError:
        return _value_or_error(self.take_notices)

    @ray.method(concurrency_group="quotes")
    def live_quote(self, symbol: str) -> dict:
        return super().live_quote(symbol)

    @ray.method(concurrency_group="quotes")
    def marks(self, symbols: list[str], max_silence_s: float) -> dict:
        return super().marks(symbols, max_silence_s)

    @ray.method(concurrency_group="quotes")
    def stale(self, symbols: list[str], max_silence_s: float) -> dict[str, float | None]:
        return super().stale(symbols, max_silence_s)

    @ray.method(concurrency_group="quotes")
    def new_stalls(self, symbols: list[str], max_silence_s: float) -> dict[str, float | None]:
        return super().new_stalls(symbols, max_silence_s)

    @ray.method(concurrency_group="quotes")
    def ws_stats(self) -> dict:
        return super().ws_stats()


def _value_or_error(fn, *args):
    try:
        return fn(*args)
    except KisError as exc:
        return exc


BrokerGatewayActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0,
                                concurrency_groups={"quotes": 2})(BrokerGateway)


def gateway_name(env: Environment, credentials: Credentials) -> str:
    digest = hashlib.sha256(f"{env.name}|{env.rest_url}|{credentials.app_key}".encode()).hexdigest()[:16]
    return f"kis-gateway:{env.name}:{digest}"


def get_or_create_gateway(env: Environment, credentials: Credentials, cache_dir: Path | str | None = None):
    """The app key's one BrokerGateway (created on first use, then shared). The first caller's
    environment options and cache folder are the session's."""
    return BrokerGatewayActor.options(name=gateway_name(env, credentials), namespace=NAMESPACE,
                                      get_if_exists=True, lifetime="detached").remote(
        env, credentials, None if cache_dir is None else str(cache_dir))


def close_gateway(env: Environment, credentials: Credentials) -> bool:
    """End the app key's gateway (its WebSocket session first), if one runs; True when one was ended."""
    try:
        handle = ray.get_actor(gateway_name(env, credentials), namespace=NAMESPACE)
    except ValueError:
        return False
    try:
        ray.get(handle.close.remote(), timeout=10)
    except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
        pass   # dead or stuck: killed below all the same
    ray.kill(handle, no_restart=True)
    return True


class _GatewayHandle:
    """The app key's BrokerGateway as seen from one process: found (or started) on first use,
    looked up again after it died; the handle is never pickled."""

    env: Environment
    credentials: Credentials

    def __init__(self, cache_dir: Path | str | None):
        self._cache_arg = None if cache_dir is None else str(cache_dir)
        self._gateway = None

    def __getstate__(self):
        return {**self.__dict__, "_gateway": None}

    def gateway(self):
        if self._gateway is None:
            self._gateway = get_or_create_gateway(self.env, self.credentials, self._cache_arg)
        return self._gateway

    def _call(self, what: str, idempotent: bool, send):
        """`send(handle)`'s answer; a call that may repeat is asked again while the gateway
        restarts; a KIS error it answered is raised here as itself."""
        attempts = QUERY_ATTEMPTS if idempotent else 1
        for attempt in range(attempts):
            try:
                out = ray.get(send(self.gateway()))
            except ray.exceptions.RayActorError:
                # restarting, or ended: look it up (or start one) again next time
                self._gateway = None
                if attempt + 1 < attempts:
                    time.sleep(FIRST_WAIT_S * 2 ** attempt)
                continue
            if isinstance(out, KisError):
                raise out
            return out
        raise KisTransportError(tr_id=what, detail="the KIS gateway actor did not answer")


class GatewayRest(_GatewayHandle, RestClient):
    """A RestClient whose calls go through the app key's BrokerGateway."""

    def __init__(self, env: Environment, credentials: Credentials, cache_dir: Path | str | None = None):
        RestClient.__init__(self, env, credentials)
        _GatewayHandle.__init__(self, cache_dir)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        # the order-id map lives here, on this actor's node (KisBroker)
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def __repr__(self) -> str:
        return f"GatewayRest(env={self.env.name!r}, url={self.env.rest_url!r})"

    def request(self, method: str, path: str, tr_id: str, *, params: dict | None = None, body: dict | None = None,
                tr_cont: str = "", idempotent: bool = True, extra_headers: dict | None = None) -> Reply:
        return self._call(tr_id, idempotent, lambda g: g.call.remote(method, path, tr_id, params, body, tr_cont,
                                                                      idempotent, extra_headers))

    def hashkey(self, body: dict) -> str:
        return self._call("hashkey", True, lambda g: g.hashkey_or_error.remote(body))

    def stats(self) -> dict:
        return self._call("stats", True, lambda g: g.stats.remote())

    def take_notices(self) -> list:
        """The execution notices' fills (FillEvent) the gateway's WebSocket session received since
        the last call (it registers the account's notices on first use, and again after it restarted).
        Asked again while the gateway restarts: what a dead gateway held is gone, and REST recovers it."""
        return self._call("websocket", True, lambda g: g.take_notices_or_error.remote())


class GatewayQuotes(_GatewayHandle):
    """The app key's live quotes from the gateway's WebSocket session (broker/kis/realtime.py
    RealtimeQuotes), for the live market state. Every call may repeat (registering twice
    registers once), so each is asked again while the gateway restarts."""

    def __init__(self, env: Environment, credentials: Credentials, cache_dir: Path | str | None = None):
        super().__init__(cache_dir)
        self.env, self.credentials = env, credentials

    def __repr__(self) -> str:
        return f"GatewayQuotes(env={self.env.name!r}, ws={self.env.ws_url!r})"

    def watch(self, symbols: list[str], book: bool = True) -> int:
        """Register the symbols' trades (and book) on the session; SubscriptionCapError when they do not fit."""
        return self._call("websocket", True, lambda g: g.watch_or_error.remote(list(symbols), book))

    def live_quote(self, symbol: str) -> dict:
        return self._call("websocket", True, lambda g: g.live_quote.remote(symbol))

    def marks(self, symbols: list[str], max_silence_s: float) -> dict:
        return self._call("websocket", True, lambda g: g.marks.remote(list(symbols), max_silence_s))

    def stale(self, symbols: list[str], max_silence_s: float) -> dict[str, float | None]:
        return self._call("websocket", True, lambda g: g.stale.remote(list(symbols), max_silence_s))

    def new_stalls(self, symbols: list[str], max_silence_s: float) -> dict[str, float | None]:
        return self._call("websocket", True, lambda g: g.new_stalls.remote(list(symbols), max_silence_s))
