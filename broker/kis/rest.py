"""The REST transport: headers, rate limiting, the response envelope, retries and paging.

Retry policy (KIS_API.md §6):
* EGW00201/EGW00215 (quota): back off and retry — KIS did not process the request.
* EGW00123/EGW00121/EGW00122 (token): drop the token, get a new one once, retry once.
* Transport failure (timeout, dropped connection, 5xx without a KIS body, malformed body):
  queries are retried (they change nothing); an ORDER is never retried here — the caller gets
  KisTransportError and must look the order up first (broker/kis/orders.py does).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from broker.kis.auth import TokenCache, hashkey
from broker.kis.config import Credentials, Environment
from broker.kis.errors import KisBusinessError, KisRateLimited, KisTokenError, KisTransportError, json_object
from broker.kis.ratelimit import bucket_for
from broker.kis.redact import protect

RATE_CODES = {"EGW00201", "EGW00215"}
TOKEN_CODES = {"EGW00123", "EGW00121", "EGW00122"}
MORE_PAGES = {"F", "M"}


@dataclass
class Reply:
    data: dict
    tr_cont: str
    status: int

    def out(self, key: str = "output"):
        return self.data.get(key)


class RestClient:
    """What the TR modules (quotes.py, orders.py) and KisBroker need of a KIS REST client.

    Two kinds: `KisRest`, the HTTP client itself (token cache, rate limiter, connection pool),
    and `actors/gateway.py` `GatewayRest`, the same calls through the app key's one BrokerGateway
    actor, so that every process of an application shares one session and one request budget.
    `cache_dir`: where the session keeps its files (token cache, the order-id map beside it)."""

    env: Environment
    cache_dir: Path

    def __init__(self, env: Environment, credentials: Credentials, sleep=time.sleep):
        self.env = env
        self._cred = credentials
        protect(*credentials.secrets())
        self._sleep = sleep

    @property
    def credentials(self) -> Credentials:
        return self._cred

    def request(self, method: str, path: str, tr_id: str, *, params: dict | None = None, body: dict | None = None,
                tr_cont: str = "", idempotent: bool = True, extra_headers: dict | None = None) -> Reply:
        """One logical call. `idempotent=False` (orders): no retry after a transport failure."""
        raise NotImplementedError

    def hashkey(self, body: dict) -> str:
        """The `hashkey` header value for an order body (POST /uapi/hashkey)."""
        raise NotImplementedError

    def pages(self, path: str, tr_id: str, params: dict, max_pages: int = 100, pause_s: float = 0.0):
        """Continuation paging (§3.3): yields each page's Reply until tr_cont is D/E or blank."""
        params = dict(params, CTX_AREA_FK100="", CTX_AREA_NK100="")
        tr_cont = ""
        for _ in range(max_pages):
            reply = self.request("GET", path, tr_id, params=params, tr_cont=tr_cont)
            yield reply
            if reply.tr_cont not in MORE_PAGES:
                return
            params["CTX_AREA_FK100"] = reply.data.get("ctx_area_fk100", "")
            params["CTX_AREA_NK100"] = reply.data.get("ctx_area_nk100", "")
            tr_cont = "N"
            if pause_s:
                self._sleep(pause_s)
        raise KisTransportError(tr_id=tr_id, detail=f"more than {max_pages} pages")


class KisRest(RestClient):
    def __init__(self, env: Environment, credentials: Credentials, tokens: TokenCache | None = None,
                 session: requests.Session | None = None, sleep=time.sleep):
        super().__init__(env, credentials, sleep)
        self.session = session or requests.Session()
        if env.name == "sim" or urlsplit(env.rest_url).hostname in ("127.0.0.1", "localhost", "::1"):
            self.session.trust_env = False   # loopback simulator: never through a proxy from the environment
        self.tokens = tokens or TokenCache(env, credentials, session=self.session)
        self.cache_dir = self.tokens.dir
        self.bucket = bucket_for(env.name, env.rest_url, credentials.app_key, env.rate_per_s, env.burst)
        self.stats = {"requests": 0, "rate_limited": 0, "token_refreshes": 0, "transport_errors": 0}

    def __repr__(self) -> str:
        return f"KisRest(env={self.env.name!r}, url={self.env.rest_url!r})"

    def hashkey(self, body: dict) -> str:
        return hashkey(self.session, self.env, self._cred, body)

    def request(self, method: str, path: str, tr_id: str, *, params: dict | None = None, body: dict | None = None,
                tr_cont: str = "", idempotent: bool = True, extra_headers: dict | None = None) -> Reply:
        """One logical call. `idempotent=False` (orders): no retry after a transport failure."""
        token = self.tokens.token()
        refreshed = False
        rate_retries = 0
        transport_retries = 0
        backoff = self.env.backoff_s
        while True:
            try:
                reply = self._send(method, path, tr_id, token, params, body, tr_cont, extra_headers)
            except KisTransportError:
                self.stats["transport_errors"] += 1
                if idempotent and transport_retries < 2:
                    transport_retries += 1
                    self._sleep(backoff)
                    continue
                raise
            code = str(reply.data.get("msg_cd", ""))
            if reply.data.get("rt_cd") == "0":
                return reply
            if code in RATE_CODES:
                self.stats["rate_limited"] += 1
                if rate_retries >= self.env.rate_limit_retries:
                    raise KisRateLimited(code, reply.data.get("msg1", ""), status=reply.status, tr_id=tr_id)
                rate_retries += 1
                self._sleep(backoff)
                backoff *= 2
                continue
            if code in TOKEN_CODES:
                if refreshed:
                    raise KisTokenError(code, reply.data.get("msg1", ""), status=reply.status, tr_id=tr_id)
                refreshed = True
                self.stats["token_refreshes"] += 1
                token = self.tokens.token(stale=token)
                continue
            if reply.status >= 500 and "rt_cd" not in reply.data:
                raise KisTransportError(status=reply.status, tr_id=tr_id, detail="server error without a KIS body")
            raise KisBusinessError(code, reply.data.get("msg1", ""), status=reply.status, tr_id=tr_id)

    def _send(self, method, path, tr_id, token, params, body, tr_cont, extra_headers) -> Reply:
        headers = {
            "content-type": "application/json; charset=utf-8",
            "authorization": f"Bearer {token}",
            "appkey": self._cred.app_key,
            "appsecret": self._cred.app_secret,
            "tr_id": tr_id,
            "tr_cont": tr_cont,
            "custtype": self.env.custtype,
        }
        if extra_headers:
            headers.update(extra_headers)
        self.bucket.acquire()
        self.stats["requests"] += 1
        url = self.env.rest_url + path
        try:
            if method == "GET":
                resp = self.session.get(url, params=params or {}, headers=headers, timeout=self.env.timeout_s)
            else:
                resp = self.session.post(url, data=json.dumps(body or {}, ensure_ascii=False).encode("utf-8"),
                                         headers=headers, timeout=self.env.timeout_s)
        except requests.Timeout:
            # `from None`: the requests exception text carries the URL (with the account in the query)
            raise KisTransportError(tr_id=tr_id, detail="timeout") from None
        except requests.RequestException as exc:
            raise KisTransportError(tr_id=tr_id, detail=f"connection failed ({type(exc).__name__})") from None
        if resp.status_code != 200 and resp.status_code not in self.env.gateway_error_statuses:
            # e.g. a proxy's 502: whatever the body says, it is not KIS's answer
            raise KisTransportError(status=resp.status_code, tr_id=tr_id, detail="unexpected HTTP status")
        data = json_object(resp, tr_id)
        if resp.status_code >= 500 and "rt_cd" not in data:
            raise KisTransportError(status=resp.status_code, tr_id=tr_id, detail="server error without a KIS body")
        return Reply(data=data, tr_cont=resp.headers.get("tr_cont", "") or "", status=resp.status_code)
