"""Who may ask /v1/decide, and for which run.

One service secret (KRT_DECIDE_TOKEN, else a 0600 file created once under the cache folder, so
`trader serve` and `trader run` on one machine agree without a secret in any command line).
Two kinds of bearer token:
* the secret itself: stateless decisions only (outside callers, benchmarks) — nothing is stored,
  so such a request can move no run's book;
* a run token `run.<run_id>.<hmac>` = HMAC-SHA256(secret, run_id): decisions for that run only.
  The driver that starts a trading loop derives its run token and hands it to the loop; a run
  token cannot act for another run id (the signature would not match).
Comparisons are constant-time (hmac.compare_digest); tokens are never logged or echoed, and the
`Secret` wrapper keeps the secret out of reprs (deployment arguments show in Ray's state API).

No Ray here: plain code, tested without a cluster.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

ENV = "KRT_DECIDE_TOKEN"
RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MIN_SECRET = 16


class Secret:
    """A string that does not show itself in repr/str (deployment args, logs, tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if len(value) < MIN_SECRET:
            raise ValueError(f"{ENV} must be at least {MIN_SECRET} characters")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __reduce__(self):  # pickled into the Serve replicas as the same wrapper
        return (Secret, (self._value,))


def default_token_file() -> Path:
    from broker.kis.auth import default_cache_dir  # the one cache folder (KRT_KIS_CACHE_DIR)

    return default_cache_dir() / "decide-token"


def load_secret(create: bool = True, path: Path | None = None) -> Secret:
    """KRT_DECIDE_TOKEN, else the token file (created 0600 with a random secret when `create`)."""
    value = os.environ.get(ENV, "").strip()
    if value:
        return Secret(value)
    path = path or default_token_file()
    if path.exists():
        return Secret(path.read_text().strip())
    if not create:
        raise ValueError(f"no decision-service secret: set {ENV} or create {path}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:   # another process made it a moment ago
        return Secret(path.read_text().strip())
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32))
    return Secret(path.read_text().strip())


def auth_headers(token: str | None = None) -> dict[str, str]:
    """The Authorization header for `token` (default: the service secret, stateless decisions)."""
    return {"authorization": f"Bearer {token or load_secret().reveal()}"}


def _sign(secret: Secret, run_id: str) -> str:
    return hmac.new(secret.reveal().encode(), f"run:{run_id}".encode(), hashlib.sha256).hexdigest()


def run_token(secret: Secret, run_id: str) -> str:
    if not RUN_ID.match(run_id):
        raise ValueError(f"run id {run_id!r} must be 1-64 letters, digits, '_' or '-'")
    return f"run.{run_id}.{_sign(secret, run_id)}"


class Unauthorized(Exception):
    """No valid bearer token (the message never contains the token)."""


def principal(secret: Secret, authorization: str | None) -> str | None:
    """The run id a request may act for (None: the service secret, stateless only).
    Raises Unauthorized for a missing or wrong token."""
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    token = authorization[len("Bearer "):].strip()
    if token.startswith("run."):
        run_id, _, sig = token[4:].rpartition(".")
        if RUN_ID.match(run_id) and hmac.compare_digest(sig.encode(), _sign(secret, run_id).encode()):
            return run_id
        raise Unauthorized("invalid bearer token")
    if hmac.compare_digest(token.encode(), secret.reveal().encode()):
        return None
    raise Unauthorized("invalid bearer token")
