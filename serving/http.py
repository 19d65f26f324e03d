"""The HTTP face of the decision service, shared by the Serve ingress and the in-process tests.

`make_api()` builds the FastAPI app with
* a body-size limit (an ASGI middleware: the body is counted as it arrives; over the limit the
  answer is 422 naming `body`, and the handler never sees it);
* bearer-token authentication of /v1/decide before the body is read (serving/auth.py): 401
  without a valid token; the principal (the run id a run token is for, or None for the service
  secret) is put in the request scope for the handler;
* validation errors as 422 naming the field, with the offending input left out of the echo (a
  NaN or Infinity in it made the old echo fail JSON encoding: a 500), and any input-driven error
  of the core as 422/409 — never a 500 for bad input.
The routes themselves are added by the caller (serving/app.py as Serve ingress methods, the
tests as plain functions) and both call `serving.service.DecisionService.decide`.
"""
from __future__ import annotations

import json
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serving.auth import Secret, Unauthorized, principal

MAX_BODY_BYTES = 16 * 1024 * 1024  # 500 symbols × 5,000 bars would not fit; a 300-bar snapshot of 500 does
PROTECTED = ("/v1/decide",)


class ServiceError(Exception):
    """An answer other than 200 that the handler chose (status code + message)."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def _json(status: int, body: dict, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body, headers=headers)


class Guard:
    """ASGI middleware: authentication and the body-size limit, before FastAPI parses anything."""

    def __init__(self, app, secret_getter: Callable[[], Secret], max_body: int = MAX_BODY_BYTES):
        self.app, self.secret_getter, self.max_body = app, secret_getter, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not any(scope["path"].endswith(p) for p in PROTECTED):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            who = principal(self.secret_getter(), headers.get("authorization"))
        except Unauthorized as exc:
            resp = _json(401, {"detail": str(exc)}, {"WWW-Authenticate": "Bearer"})
            return await resp(scope, receive, send)
        too_big = _json(422, {"detail": [{"loc": ["body"], "type": "too_large",
                                          "msg": f"body: larger than {self.max_body} bytes"}]})
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await too_big(scope, receive, send)
        # read the whole body (bounded), then hand it on: a chunked body cannot slip past the limit
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await too_big(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        scope = dict(scope)
        scope.setdefault("state", {})
        scope["state"] = {**scope["state"], "principal": who}
        return await self.app(scope, replay, send)


def _clean(value):
    """JSON-safe copy: non-finite floats and odd objects become strings."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    return str(value)


def validation_errors(errors) -> list[dict]:
    """Pydantic/FastAPI errors without the input echo (it may be huge, NaN or hostile)."""
    out = []
    for e in errors:
        item = {"loc": _clean(list(e.get("loc", ()))), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        out.append(item)
    return out


def make_api(secret_getter: Callable[[], Secret], max_body: int = MAX_BODY_BYTES) -> FastAPI:
    api = FastAPI(title="kis-ray-trader decision service", version="1")
    api.add_middleware(Guard, secret_getter=secret_getter, max_body=max_body)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _json(422, {"detail": validation_errors(exc.errors())})

    @api.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError):
        detail = {"detail": exc.message}
        if exc.field:
            detail["field"] = exc.field
        return _json(exc.status, detail)

    return api


def request_principal(request: Request) -> str | None:
    try:
        return request.scope["state"]["principal"]
    except KeyError:
        raise ServiceError(401, "not authenticated") from None


def dumps(obj) -> str:
    return json.dumps(_clean(obj))
