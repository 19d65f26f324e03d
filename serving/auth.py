"""The decision endpoint's bearer token: who may ask for a decision.

POST /v1/decide moves a book (its answers become orders), so it needs `Authorization: Bearer
<token>`. The token is KRT_DECIDE_TOKEN when set (a cluster: give the head and every caller the
same value); otherwise it lives in `decide-token` (mode 0600) in the cache folder
(KRT_KIS_CACHE_DIR, default ~/.cache/kis-ray-trader), made on first use, so the service and the
trading loop started on one machine agree without any setup. It is compared in constant time and
never logged; the Serve deployment gets it as a constructor argument, not through a runtime env
(which the Ray dashboard shows).
"""
from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

ENV = "KRT_DECIDE_TOKEN"
MIN_LENGTH = 16


def token_file() -> Path:
    from broker.kis.auth import default_cache_dir

    return default_cache_dir() / "decide-token"


def decide_token() -> str:
    """The token, from KRT_DECIDE_TOKEN or the 0600 token file (created when missing)."""
    value = os.environ.get(ENV, "").strip()
    if value:
        if len(value) < MIN_LENGTH:
            raise ValueError(f"{ENV} must be at least {MIN_LENGTH} characters")
        return value
    path = token_file()
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fresh = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:   # another process made it a moment ago
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(fresh)
    return fresh


def auth_headers(token: str | None = None) -> dict[str, str]:
    return {"authorization": f"Bearer {token or decide_token()}"}


def authorized(header: str | None, token: str) -> bool:
    """Does an Authorization header carry `token`? (constant-time)"""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer "):].strip().encode(), token.encode())
