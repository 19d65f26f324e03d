"""Keep secrets out of logs written by libraries the client uses.

urllib3 logs every request line at DEBUG, and KIS GET queries carry the account number
(CANO); a logging filter on those loggers masks every registered secret before any handler
sees the record. The client registers its credentials' secrets when it is created.
"""
from __future__ import annotations

import logging
import threading

from broker.kis.config import mask

LOGGERS = ("urllib3.connectionpool", "urllib3", "requests", "websockets", "websockets.client",
           "websockets.server", "broker", "broker.kis", "broker.sim")


class RedactSecrets(logging.Filter):
    def __init__(self):
        super().__init__()
        self.secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, *secrets: str) -> None:
        with self._lock:
            self.secrets.update(s for s in secrets if s and len(s) >= 4)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:
            return True
        hits = [s for s in self.secrets if s in msg]
        if hits:
            for s in sorted(hits, key=len, reverse=True):
                msg = msg.replace(s, mask(s))
            record.msg, record.args = msg, None
        return True


_FILTER = RedactSecrets()
_installed = False


def protect(*secrets: str) -> None:
    """Register secrets and make sure the filter sits on every logger the client touches."""
    global _installed
    _FILTER.add(*secrets)
    if not _installed:
        for name in LOGGERS:
            logging.getLogger(name).addFilter(_FILTER)
        _installed = True
