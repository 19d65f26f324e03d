"""Typed errors of the KIS client. Every KIS answer that is not a success carries msg_cd/msg1."""
from __future__ import annotations


class KisError(RuntimeError):
    """A KIS call failed. `msg_cd`/`msg1` are KIS's own code and text (never any credential)."""

    def __init__(self, msg_cd: str = "", msg1: str = "", *, status: int | None = None, tr_id: str = "",
                 detail: str = ""):
        self.msg_cd = msg_cd
        self.msg1 = (msg1 or "").strip()
        self.status = status
        self.tr_id = tr_id
        text = f"KIS {tr_id or 'call'} failed"
        if msg_cd or self.msg1:
            text += f": [{msg_cd}] {self.msg1}"
        if status is not None:
            text += f" (HTTP {status})"
        if detail:
            text += f" — {detail}"
        super().__init__(text)


class KisBusinessError(KisError):
    """rt_cd != "0" on HTTP 200: KIS refused the request (closed market, bad price, no cash ...)."""


class KisRateLimited(KisError):
    """EGW00201 / EGW00215 still answered after the retries."""


class KisTokenError(KisError):
    """Expired/invalid token that one refresh did not cure (EGW00123/EGW00121/EGW00122)."""


class KisAuthError(KisError):
    """OAuth endpoint refusal: bad app key/secret (EGW00103/EGW00105) or throttled issue (EGW00133)."""


class KisTransportError(KisError):
    """No usable answer: connection error, timeout, 5xx without a KIS body, or a malformed body.
    For an order this means the outcome is UNKNOWN: check the day's orders before anything else."""


def json_object(resp, tr_id: str) -> dict:
    """The response body as a JSON object, or KisTransportError('malformed body')."""
    try:
        data = resp.json()
    except ValueError:
        raise KisTransportError(status=resp.status_code, tr_id=tr_id, detail="malformed body") from None
    if not isinstance(data, dict):
        raise KisTransportError(status=resp.status_code, tr_id=tr_id, detail="malformed body")
    return data


class KisConfigError(ValueError):
    """Missing or malformed configuration (keys, account number, environment)."""


class SubscriptionCapError(KisError):
    """More real-time registrations than the session allows."""
