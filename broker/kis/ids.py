"""client_order_id → KIS order number (ODNO), persisted in SQLite.

KIS orders have no client-id field, so this map is how the project finds its orders again
after a restart. A row is written (state 'sending') BEFORE the order goes out; the ODNO is
filled in from the answer, or from matching the day's orders when the answer was lost.

States: sending (written, answer not yet read) → sent (ODNO known) | rejected (KIS refused it) |
not_sent (KIS never processed it: rate limit, token refusal, or two clean looks at the day's
orders found nothing) | unknown (the answer was lost and the day's orders could not be read:
it may be at the venue; it is never sent again, only looked up).

The file holds account numbers and order history: it is created readable by its owner only.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS kis_orders (
    client_order_id TEXT PRIMARY KEY,
    day             TEXT NOT NULL,     -- order date YYYYMMDD (the venue's session day)
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL,
    qty             INTEGER NOT NULL,
    order_type      TEXT NOT NULL,
    limit_price     INTEGER,
    state           TEXT NOT NULL,     -- sending | sent | rejected | not_sent | unknown
    odno            TEXT UNIQUE,
    orgno           TEXT,
    reason          TEXT NOT NULL DEFAULT '',
    filled_qty      INTEGER NOT NULL DEFAULT 0,  -- fills already turned into Fill objects
    filled_amt      INTEGER NOT NULL DEFAULT 0,
    submitted_at    TEXT NOT NULL
);
"""


class OrderIdMap:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _create_private(self.path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _rows(self, sql: str, args: tuple = ()) -> list[dict]:
        with self._lock:
            cur = self._db.execute(sql, args)
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    def _exec(self, sql: str, args: tuple) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def get(self, client_order_id: str) -> dict | None:
        rows = self._rows("SELECT * FROM kis_orders WHERE client_order_id=?", (client_order_id,))
        return rows[0] if rows else None

    def by_odno(self, odno: str) -> dict | None:
        rows = self._rows("SELECT * FROM kis_orders WHERE odno=?", (odno,))
        return rows[0] if rows else None

    def all(self, day: str | None = None) -> list[dict]:
        if day is None:
            return self._rows("SELECT * FROM kis_orders ORDER BY rowid")
        return self._rows("SELECT * FROM kis_orders WHERE day=? ORDER BY rowid", (day,))

    def known_odnos(self) -> set[str]:
        return {r["odno"] for r in self._rows("SELECT odno FROM kis_orders WHERE odno IS NOT NULL")}

    def intent(self, cid, day, symbol, side, qty, order_type, limit_price, submitted_at) -> None:
        self._exec("INSERT INTO kis_orders (client_order_id, day, symbol, side, qty, order_type, limit_price, state,"
                   " submitted_at) VALUES (?,?,?,?,?,?,?,'sending',?)",
                   (cid, day, symbol, side, qty, order_type, limit_price, submitted_at))

    def sent(self, cid: str, odno: str, orgno: str) -> None:
        self._exec("UPDATE kis_orders SET state='sent', odno=?, orgno=? WHERE client_order_id=?", (odno, orgno, cid))

    def rejected(self, cid: str, reason: str) -> None:
        self._exec("UPDATE kis_orders SET state='rejected', reason=? WHERE client_order_id=?", (reason, cid))

    def not_sent(self, cid: str, reason: str) -> None:
        self._exec("UPDATE kis_orders SET state='not_sent', reason=? WHERE client_order_id=?", (reason, cid))

    def unknown(self, cid: str) -> None:
        self._exec("UPDATE kis_orders SET state='unknown' WHERE client_order_id=?", (cid,))

    def filled(self, cid: str, qty: int, amt: int) -> None:
        self._exec("UPDATE kis_orders SET filled_qty=?, filled_amt=? WHERE client_order_id=?", (qty, amt, cid))


def _create_private(path: Path) -> None:
    """Create `path` as 0600 before SQLite opens it (SQLite gives its -wal/-shm files the database
    file's mode): a umask of 022 would leave the account's order history readable by every user."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    os.chmod(path, 0o600)
