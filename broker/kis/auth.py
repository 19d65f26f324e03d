"""Access tokens (with a shared on-disk cache), revoke, WebSocket approval key and hashkey.

The cache file holds {access_token, expires_at, issued_at} for one environment + app key, mode
0600. A second file is the lock (fcntl.flock), so processes on one host share one token and only
one of them ever asks KIS. `issued_at` records the last issue *request*, so no process asks more
than once per `token_throttle_s` (KIS answers EGW00133 otherwise), even after a crash.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path

import requests

from broker.kis.config import Credentials, Environment
from broker.kis.errors import KisAuthError, KisTransportError, json_object


def default_cache_dir() -> Path:
    return Path(os.environ.get("KRT_KIS_CACHE_DIR") or Path.home() / ".cache" / "kis-ray-trader")


class TokenCache:
    def __init__(self, env: Environment, credentials: Credentials, cache_dir: Path | str | None = None,
                 session: requests.Session | None = None, clock=time.time, sleep=time.sleep):
        self.env, self._cred = env, credentials
        self.dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # keyed by environment + host + app key; the key itself only enters through a hash
        digest = hashlib.sha256(f"{env.name}|{env.rest_url}|{credentials.app_key}".encode()).hexdigest()[:20]
        self.path = self.dir / f"token-{env.name}-{digest}.json"
        self.lock_path = self.dir / f"token-{env.name}-{digest}.lock"
        self._session = session or requests.Session()
        self._clock, self._sleep = clock, sleep
        self.issued_here = 0   # how many tokenP calls this object made (tests and bench read it)
        self._mem: tuple[str, float] | None = None   # (token, expires_at) last read or issued here

    def __repr__(self) -> str:
        return f"TokenCache(env={self.env.name!r}, path={str(self.path)!r})"

    # --- public ---------------------------------------------------------------------------
    def token(self, stale: str | None = None) -> str:
        """A valid access token. `stale`: a token KIS just called expired/invalid — never return it."""
        mem = self._mem
        if mem and mem[0] != stale and mem[1] - self.env.token_refresh_margin_s > self._clock():
            return mem[0]          # the common case: no file access per request
        with self._locked():
            rec = self._read()
            now = self._clock()
            if rec and rec.get("access_token") and rec["access_token"] != stale \
                    and rec.get("expires_at", 0) - self.env.token_refresh_margin_s > now:
                self._mem = (rec["access_token"], rec["expires_at"])
                return rec["access_token"]
            tok = self._issue(rec)
            self._mem = (tok, self._read()["expires_at"])
            return tok

    def invalidate(self) -> None:
        self._mem = None
        with self._locked():
            rec = self._read()
            if rec:
                rec.pop("access_token", None)
                rec["expires_at"] = 0
                self._write(rec)

    def revoke(self) -> bool:
        """POST /oauth2/revokeP for the cached token and drop it from the cache."""
        with self._locked():
            rec = self._read()
            tok = rec.get("access_token") if rec else None
            if not tok:
                return False
            body = {"appkey": self._cred.app_key, "appsecret": self._cred.app_secret, "token": tok}
            data, status = _post_json(self._session, self.env, "/oauth2/revokeP", body)
            if status != 200 or str(data.get("code", "")) != "200":
                raise KisAuthError(str(data.get("error_code", "")), str(data.get("error_description") or data.get("message", "")),
                                   status=status, tr_id="revokeP")
            rec.pop("access_token", None)
            rec["expires_at"] = 0
            self._write(rec)
            self._mem = None
            return True

    # --- internals ------------------------------------------------------------------------
    def _issue(self, rec: dict | None) -> str:
        last = (rec or {}).get("issued_at", 0)
        wait = last + self.env.token_throttle_s - self._clock()
        if wait > 0:          # never ask twice inside the window, whichever process asked first
            self._sleep(wait)
        for attempt in range(2):
            rec = dict(rec or {}, issued_at=self._clock())
            self._write(rec)  # record the attempt before sending: a crash must not allow a second ask
            self.issued_here += 1
            body = {"grant_type": "client_credentials", "appkey": self._cred.app_key, "appsecret": self._cred.app_secret}
            try:
                data, status = _post_json(self._session, self.env, "/oauth2/tokenP", body)
            finally:
                rec["issued_at"] = self._clock()   # the server counted the ask no later than now
                self._write(rec)
            if status == 200 and data.get("access_token"):
                expires_in = float(data.get("expires_in") or 86400)
                rec.update(access_token=data["access_token"], expires_at=self._clock() + expires_in)
                self._write(rec)
                return data["access_token"]
            code = str(data.get("error_code") or data.get("msg_cd") or "")
            text = str(data.get("error_description") or data.get("msg1") or "")
            if code == "EGW00133" and attempt == 0:
                self._sleep(self.env.token_throttle_s)   # throttled: wait one window, then once more
                continue
            raise KisAuthError(code, text, status=status, tr_id="tokenP")
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _locked(self):
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _write(self, rec: dict) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(rec, f)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


def approval_key(session: requests.Session, env: Environment, cred: Credentials) -> str:
    """POST /oauth2/Approval (REST host): the WebSocket approval key. Note the field `secretkey`."""
    body = {"grant_type": "client_credentials", "appkey": cred.app_key, "secretkey": cred.app_secret}
    data, status = _post_json(session, env, "/oauth2/Approval", body)
    key = data.get("approval_key")
    if status != 200 or not key:
        raise KisAuthError(str(data.get("error_code") or data.get("msg_cd") or ""),
                           str(data.get("error_description") or data.get("msg1") or ""), status=status, tr_id="Approval")
    return key


def hashkey(session: requests.Session, env: Environment, cred: Credentials, body: dict) -> str:
    """POST /uapi/hashkey: optional per KIS; returns the HASH header value for an order body."""
    headers = {"content-type": "application/json; charset=utf-8", "appkey": cred.app_key, "appsecret": cred.app_secret}
    data, status = _post_json(session, env, "/uapi/hashkey", body, headers)
    if status != 200 or not data.get("HASH"):
        raise KisAuthError(str(data.get("msg_cd", "")), str(data.get("msg1", "")), status=status, tr_id="hashkey")
    return data["HASH"]


def _post_json(session, env: Environment, path: str, body: dict, headers: dict | None = None) -> tuple[dict, int]:
    try:
        resp = session.post(env.rest_url + path, json=body, timeout=env.timeout_s,
                            headers=headers or {"content-type": "application/json; charset=utf-8"})
    except requests.RequestException as exc:
        raise KisTransportError(detail=f"{path}: {type(exc).__name__}", tr_id=path) from None
    return json_object(resp, path), resp.status_code
