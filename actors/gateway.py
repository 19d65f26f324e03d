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
* One call at a time (a plain actor): calls queue in arrival order in front of the token bucket.
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

QUERY_ATTEMPTS = 3   # a query reaching a gateway that is restarting is tried this often


class BrokerGateway(KisGateway):
    def call(self, method: str, path: str, tr_id: str, params: dict | None, body: dict | None, tr_cont: str,
             idempotent: bool, extra_headers: dict | None) -> Reply | KisError:
        """`request`, with a KIS error returned instead of raised (raised, Ray would wrap it in a
        RayTaskError carrying the gateway's traceback)."""
        try:
            return self.request(method, path, tr_id, params, body, tr_cont, idempotent, extra_headers)
        except KisError as exc:
            return exc

    def hashkey_or_error(self, body: dict) -> str | KisError:
        try:
            return self.hashkey(body)
        except KisError as exc:
            return exc


BrokerGatewayActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)(BrokerGateway)


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
    """End the app key's gateway, if one runs; True when one was ended."""
    try:
        handle = ray.get_actor(gateway_name(env, credentials), namespace=NAMESPACE)
    except ValueError:
        return False
    ray.kill(handle, no_restart=True)
    return True


class GatewayRest(RestClient):
    """A RestClient whose calls go through the app key's BrokerGateway (found or created lazily,
    in the process that uses it; the handle is not pickled)."""

    def __init__(self, env: Environment, credentials: Credentials, cache_dir: Path | str | None = None):
        super().__init__(env, credentials)
        self._cache_arg = None if cache_dir is None else str(cache_dir)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        # the order-id map lives here, on this actor's node (KisBroker)
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._gateway = None

    def __repr__(self) -> str:
        return f"GatewayRest(env={self.env.name!r}, url={self.env.rest_url!r})"

    def __getstate__(self):
        return {**self.__dict__, "_gateway": None}

    def gateway(self):
        if self._gateway is None:
            self._gateway = get_or_create_gateway(self.env, self.credentials, self._cache_arg)
        return self._gateway

    def request(self, method: str, path: str, tr_id: str, *, params: dict | None = None, body: dict | None = None,
                tr_cont: str = "", idempotent: bool = True, extra_headers: dict | None = None) -> Reply:
        out = self._call(tr_id, idempotent, lambda g: g.call.remote(method, path, tr_id, params, body, tr_cont,
                                                                     idempotent, extra_headers))
        if isinstance(out, KisError):
            raise out
        return out

    def hashkey(self, body: dict) -> str:
        out = self._call("hashkey", True, lambda g: g.hashkey_or_error.remote(body))
        if isinstance(out, KisError):
            raise out
        return out

    def stats(self) -> dict:
        return ray.get(self.gateway().stats.remote())

    def _call(self, tr_id: str, idempotent: bool, send):
        attempts = QUERY_ATTEMPTS if idempotent else 1
        for attempt in range(attempts):
            try:
                return ray.get(send(self.gateway()))
            except ray.exceptions.RayActorError:
                # restarting, or ended: look it up (or start one) again next time
                self._gateway = None
                if attempt + 1 < attempts:
                    time.sleep(self.env.backoff_s * (attempt + 1))
        raise KisTransportError(tr_id=tr_id, detail="the KIS gateway actor did not answer")
