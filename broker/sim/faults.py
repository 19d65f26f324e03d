"""Fault injection for the simulator, switchable per test (Python handle or POST /admin/fault).

Kinds (each armed for `count` matching requests, after letting `skip` of them through; `path`
narrows to URLs containing it):
  rate_limit      answer EGW00201 (HTTP 500), request not processed
  expired_token   answer EGW00123 (HTTP 500) and expire the caller's token, not processed
  http_500        HTTP 500 with a non-KIS body, not processed
  http_500_after  processed, then HTTP 500 with a non-KIS body (outcome unknown to the client)
  slow            processed, then the answer waits `delay` seconds (client times out)
  drop            processed, then the connection is closed without an answer
  drop_before     connection closed without processing
  malformed       processed, then a body that is not JSON
  ws_drop         every WebSocket session is closed (the next WebSocket message triggers it,
                  or call SimServer.drop_websockets() directly)
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

KINDS = ("rate_limit", "expired_token", "http_500", "http_500_after", "slow", "drop", "drop_before",
         "malformed", "ws_drop")
BEFORE = {"rate_limit", "expired_token", "http_500", "drop_before"}


@dataclass
class Fault:
    kind: str
    count: int = 1
    path: str = ""
    delay: float = 0.0
    skip: int = 0


class Faults:
    def __init__(self):
        self._armed: list[Fault] = []
        self._lock = threading.Lock()
        self.fired: dict[str, int] = {}

    def inject(self, kind: str, count: int = 1, path: str = "", delay: float = 0.0, skip: int = 0) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}: choose one of {', '.join(KINDS)}")
        if count < 1 or skip < 0:
            raise ValueError("fault count must be >= 1 and skip >= 0")
        with self._lock:
            self._armed.append(Fault(kind, count, path, delay, skip))

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def take(self, path: str) -> Fault | None:
        """The next armed REST fault matching this path (consumed), or None."""
        with self._lock:
            for f in self._armed:
                if f.kind != "ws_drop" and f.path in path:
                    if f.skip > 0:
                        f.skip -= 1
                        continue
                    f.count -= 1
                    if f.count <= 0:
                        self._armed.remove(f)
                    self.fired[f.kind] = self.fired.get(f.kind, 0) + 1
                    return Fault(f.kind, 1, f.path, f.delay)
        return None

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._armed)
