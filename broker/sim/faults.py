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
WebSocket kinds (`path` narrows to a TR id, e.g. "H0STCNT0"; they act on the data frames the
simulator sends: the daily bar frames, the intraday stream and the execution notices):
  ws_drop         every WebSocket session is closed instead of sending the frame (POST
                  /admin/fault {"kind": "ws_drop"} without count/skip, or SimServer.drop_websockets(),
                  closes them at once)
  ws_stall        the feed goes silent for `delay` seconds before the frame is sent
  ws_malformed    the frame is sent with its last fields cut off (a parser must name the problem)
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

WS_KINDS = ("ws_drop", "ws_stall", "ws_malformed")
KINDS = ("rate_limit", "expired_token", "http_500", "http_500_after", "slow", "drop", "drop_before",
         "malformed", *WS_KINDS)
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

    def take(self, path: str, websocket: bool = False) -> Fault | None:
        """The next armed fault matching this path (consumed), or None: REST kinds for a URL path,
        WebSocket kinds (`websocket=True`) for a data frame's TR id."""
        with self._lock:
            for f in self._armed:
                if (f.kind in WS_KINDS) == websocket and f.path in path:
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
