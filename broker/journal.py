"""The order journal (SQLite): every order intent, broker answer, fill and end-of-day account.

Write-ahead rule: an order is journaled (state `intent`) and committed *before* it is sent, and
its broker answer is written right after. A client order id is unique, so the same decision can
never be journaled, and therefore never sent, twice. After a crash, `unacknowledged()` lists the
intents whose fate is unknown; the caller asks the broker (`find_order`) before doing anything.
"""
from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from pathlib import Path

from broker.base import Fill, Order, OrderRequest

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY,
    decided_at      TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL,
    qty             INTEGER NOT NULL,
    order_type      TEXT NOT NULL,
    limit_price     INTEGER,
    state           TEXT NOT NULL,      -- intent | open | filled | partial | cancelled | expired | rejected
    broker_order_id TEXT,
    filled_qty      INTEGER NOT NULL DEFAULT 0,
    reason          TEXT NOT NULL DEFAULT '',
    updated_at      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fills (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    client_order_id TEXT NOT NULL REFERENCES orders(client_order_id),
    broker_order_id TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL,
    qty             INTEGER NOT NULL,
    price           INTEGER NOT NULL,
    commission      INTEGER NOT NULL,
    tax             INTEGER NOT NULL,
    filled_at       TEXT NOT NULL,
    UNIQUE (broker_order_id, filled_at, qty, price)
);
CREATE TABLE IF NOT EXISTS account (
    day        TEXT PRIMARY KEY,
    cash       INTEGER NOT NULL,
    equity     REAL NOT NULL,
    positions  TEXT NOT NULL,           -- JSON {symbol: shares}
    benchmark  REAL                     -- benchmark index close that day, if known
);
CREATE TABLE IF NOT EXISTS decisions (
    day      TEXT PRIMARY KEY,
    payload  TEXT NOT NULL              -- JSON: targets, agent weights, regime, risk
);
"""


class DuplicateOrder(RuntimeError):
    """The client order id is already journaled: the decision was already sent (or is in flight)."""


class Journal:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one connection, serialised by a lock: the journal is written by one execution actor
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, args: tuple) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def record_intent(self, request: OrderRequest, decided_at: dt.datetime) -> None:
        """Journal an order before sending it. Raises DuplicateOrder if its id is already here."""
        try:
            self._write(
                "INSERT INTO orders (client_order_id, decided_at, symbol, side, qty, order_type, limit_price,"
                " state, updated_at) VALUES (?,?,?,?,?,?,?,'intent',?)",
                (request.client_order_id, decided_at.isoformat(), request.symbol, request.side.value, request.qty,
                 request.order_type.value, request.limit_price, _now()))
        except sqlite3.IntegrityError as exc:
            raise DuplicateOrder(f"order {request.client_order_id} is already journaled") from exc

    def record_order(self, order: Order) -> None:
        """The broker's answer, or a later state change, for a journaled order."""
        self._write(
            "UPDATE orders SET state=?, broker_order_id=?, filled_qty=?, reason=?, updated_at=? WHERE client_order_id=?",
            (order.status.value, order.broker_order_id, order.filled_qty, order.reason, _now(), order.client_order_id))

    def record_fill(self, fill: Fill) -> None:
        self._write(
            "INSERT OR IGNORE INTO fills (client_order_id, broker_order_id, symbol, side, qty, price, commission, tax,"
            " filled_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (fill.client_order_id, fill.broker_order_id, fill.symbol, fill.side.value, fill.qty, fill.price,
             fill.commission, fill.tax, fill.filled_at.isoformat()))

    def record_account(self, day: dt.date, cash: int, equity: float, positions: dict[str, int],
                       benchmark: float | None = None) -> None:
        self._write("INSERT OR REPLACE INTO account (day, cash, equity, positions, benchmark) VALUES (?,?,?,?,?)",
                    (day.isoformat(), cash, equity, json.dumps(positions, sort_keys=True), benchmark))

    def record_decision(self, day: dt.date, payload: dict) -> None:
        self._write("INSERT OR REPLACE INTO decisions (day, payload) VALUES (?,?)",
                    (day.isoformat(), json.dumps(payload, sort_keys=True)))

    # --- reading back --------------------------------------------------------------------
    def query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self._db.execute(sql, args)
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, row)) for row in cur.fetchall()]

    def unacknowledged(self) -> list[dict]:
        """Intents with no broker answer: their fate must be checked with the broker first."""
        return self.query("SELECT * FROM orders WHERE state='intent' ORDER BY decided_at")

    def positions_from_fills(self) -> dict[str, int]:
        rows = self.query("SELECT symbol, SUM(CASE side WHEN 'buy' THEN qty ELSE -qty END) AS q FROM fills"
                          " GROUP BY symbol")
        return {r["symbol"]: int(r["q"]) for r in rows if r["q"]}

    def cash_from_fills(self, starting_cash: int) -> int:
        row = self.query("SELECT COALESCE(SUM(CASE side WHEN 'sell' THEN qty*price - commission - tax"
                         " ELSE -(qty*price + commission) END), 0) AS flow FROM fills")[0]
        return starting_cash + int(row["flow"])


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()
