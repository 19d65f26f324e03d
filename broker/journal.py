"""The order journal (SQLite): every order intent, broker answer, fill and end-of-day account.

Write-ahead rule: an order is journaled (state `intent`) and committed *before* it is sent, and
its broker answer is written right after. A client order id is unique, so the same decision can
never be journaled, and therefore never sent, twice. After a crash, `unacknowledged()` lists the
intents whose fate is unknown; the caller asks the broker (`find_order`) before doing anything.

Every row carries the run id it belongs to, so runs sharing a file never overwrite each other.
A fill is identified by its run, its client order id and the broker's fill id (stable however
often the broker reports it): a re-reported fill is journaled once, and two genuine partial fills
of equal size and price are two rows. A fill reported again with other numbers is the broker's
correction (KIS: the REST execution list's amount differs from an execution notice's; REST wins):
its quantity, price, commission and tax replace the row's, logged. `transaction()` makes the writes of one step (order states,
fills, the account row) land together or not at all.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from broker.base import Fill, Order, OrderRequest

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3   # 2: run_id on every row, fill identity (run, client order id, broker fill id)
                     # 3: execution algorithms: parent_orders, orders.parent_id (a v2 file is migrated)
SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL,
    decided_at      TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL,
    qty             INTEGER NOT NULL,
    order_type      TEXT NOT NULL,
    limit_price     INTEGER,
    state           TEXT NOT NULL,      -- intent | open | unknown | filled | partial | cancelled | expired
                                        -- | rejected | denied (by the risk engine: never sent)
    broker_order_id TEXT,
    filled_qty      INTEGER NOT NULL DEFAULT 0,
    reason          TEXT NOT NULL DEFAULT '',
    updated_at      TEXT NOT NULL,
    parent_id       TEXT                -- the parent order it is a child of (parent_orders); NULL: none
);
CREATE TABLE IF NOT EXISTS parent_orders (   -- a decided order worked by an execution algorithm
    client_order_id TEXT PRIMARY KEY,        -- the decision's order id; children are <id>-T01, -L01, -M
    run_id          TEXT NOT NULL,
    decided_at      TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL,
    qty             INTEGER NOT NULL,
    algo            TEXT NOT NULL,           -- twap | limit_touch (broker/execution_algos.py)
    params          TEXT NOT NULL            -- JSON: the algorithm's settings and window
);
CREATE TABLE IF NOT EXISTS fills (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          TEXT NOT NULL,
    client_order_id TEXT NOT NULL REFERENCES orders(client_order_id),
    broker_order_id TEXT NOT NULL,
    fill_id         TEXT NOT NULL,      -- the broker's identity of the fill within its order
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL,
    qty             INTEGER NOT NULL,
    price           INTEGER NOT NULL,
    commission      INTEGER NOT NULL,
    tax             INTEGER NOT NULL,
    filled_at       TEXT NOT NULL,
    UNIQUE (run_id, client_order_id, fill_id)
);
CREATE TABLE IF NOT EXISTS account (
    run_id     TEXT NOT NULL,
    day        TEXT NOT NULL,
    cash       INTEGER NOT NULL,
    equity     REAL NOT NULL,
    positions  TEXT NOT NULL,           -- JSON {symbol: shares}
    benchmark  REAL,                    -- benchmark index close that day, if known
    PRIMARY KEY (run_id, day)
);
CREATE TABLE IF NOT EXISTS decisions (
    run_id   TEXT NOT NULL,
    day      TEXT NOT NULL,
    payload  TEXT NOT NULL,             -- JSON: targets, agent weights, regime, risk
    PRIMARY KEY (run_id, day)
);
CREATE TABLE IF NOT EXISTS intraday_events (   -- what an intraday risk rule did (actors/session_watch.py)
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          TEXT NOT NULL,
    at              TEXT NOT NULL,          -- session time it fired
    rule            TEXT NOT NULL,          -- intraday_loss_limit | position_stop
    symbol          TEXT,                   -- NULL: a trading-state change
    action          TEXT NOT NULL,          -- "state REDUCING" | "sell <qty>"
    reason          TEXT NOT NULL,
    client_order_id TEXT                    -- the sell it sent (its row in orders)
);
CREATE TABLE IF NOT EXISTS session_marks (     -- the book at live marks, per session-watch poll (dashboard)
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id            TEXT NOT NULL,
    at                TEXT NOT NULL,        -- session time of the poll
    cash              REAL NOT NULL,        -- the watch's book: the session's start, the day's sells projected
    equity            REAL,                 -- cash + held names at their marks; NULL while one has no mark
    day_start_equity  REAL NOT NULL,        -- the previous close's equity (base of the intraday loss)
    marks             TEXT NOT NULL         -- JSON {symbol: {"qty", "mark", "reference"}} of the held names
);
CREATE INDEX IF NOT EXISTS session_marks_run_at ON session_marks (run_id, at);
CREATE TABLE IF NOT EXISTS controls (       -- the operator's trading state (`trader halt` / `resume`)
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL,                  -- '*': every run in this journal
    state   TEXT NOT NULL,                  -- ACTIVE | REDUCING | HALTED
    reason  TEXT NOT NULL,
    at      TEXT NOT NULL
);
"""
COUNTED = ("orders", "fills", "account", "decisions")   # the tables with a row per run


class JournalError(RuntimeError):
    """The journal file cannot be used as it is (e.g. written by an older version)."""


class DuplicateOrder(RuntimeError):
    """The client order id is already journaled: the decision was already sent (or is in flight)."""


class Journal:
    """`run_id`: the run every write belongs to and every read is narrowed to (None: read all runs,
    write nothing)."""

    def __init__(self, path: Path | str, run_id: str | None = None, readonly: bool = False):
        """`readonly`: for watchers (dashboard, `trader status`): opened `mode=ro`, never takes a
        write lock, so it never holds the trading loop up (WAL readers do not block the writer)."""
        self.path = Path(path)
        self.run_id = run_id
        if readonly:
            if not self.path.exists():
                raise FileNotFoundError(f"no journal at {self.path}: start the loop (`trader run` or `trader demo`) first")
            self._db = sqlite3.connect(f"file:{self.path.resolve()}?mode=ro", uri=True, check_same_thread=False,
                                       isolation_level=None, timeout=2.0)
            self._check_schema(readonly=True)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # one connection, serialised by a lock: the journal is written by one execution actor
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._check_schema()
            self._db.executescript(SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._lock = threading.RLock()
        self._depth = 0   # nesting of transaction()

    def _check_schema(self, readonly: bool = False) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables & {"orders", "fills", "account", "decisions"} and version == 2 and not readonly:
            # 2 → 3: orders get their parent; parent_orders is created with the rest of SCHEMA
            self._db.execute("ALTER TABLE orders ADD COLUMN parent_id TEXT")
            return
        if tables & {"orders", "fills", "account", "decisions"} and version != SCHEMA_VERSION \
                and not (readonly and version == 2):   # a watcher reads a v2 file as it is
            self._db.close()
            raise JournalError(f"journal {self.path} was written by an earlier version of kis-ray-trader "
                               f"(schema {version}, this one writes {SCHEMA_VERSION}: run ids and fill ids): "
                               "move it away or choose another journal path")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside land in one SQLite transaction (nested calls join the outer one)."""
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outer:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self._db.execute("COMMIT")

    @property
    def in_transaction(self) -> bool:
        """Inside `transaction()`: what is written now is not committed yet."""
        return self._depth > 0

    def _write(self, sql: str, args: tuple) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def _run(self) -> str:
        if not self.run_id:
            raise JournalError("this journal was opened without a run id: it can be read, not written")
        return self.run_id

    def record_intent(self, request: OrderRequest, decided_at: dt.datetime, parent_id: str | None = None) -> None:
        """Journal an order before sending it (`parent_id`: the parent order it is a child of).
        Raises DuplicateOrder if its id is already here."""
        if self._depth:
            raise JournalError("an order intent is committed on its own, before it is sent, never inside a "
                               "transaction that could still roll it back")
        try:
            self._write(
                "INSERT INTO orders (client_order_id, run_id, decided_at, symbol, side, qty, order_type, limit_price,"
                " state, updated_at, parent_id) VALUES (?,?,?,?,?,?,?,?,'intent',?,?)",
                (request.client_order_id, self._run(), decided_at.isoformat(), request.symbol, request.side.value,
                 request.qty, request.order_type.value, request.limit_price, _now(), parent_id))
        except sqlite3.IntegrityError as exc:
            raise DuplicateOrder(f"order {request.client_order_id} is already journaled") from exc

    def record_denied(self, request: OrderRequest, decided_at: dt.datetime, reason: str,
                      parent_id: str | None = None) -> None:
        """An order the risk engine refused: journaled with its reason, never sent."""
        try:
            self._write(
                "INSERT INTO orders (client_order_id, run_id, decided_at, symbol, side, qty, order_type, limit_price,"
                " state, reason, updated_at, parent_id) VALUES (?,?,?,?,?,?,?,?,'denied',?,?,?)",
                (request.client_order_id, self._run(), decided_at.isoformat(), request.symbol, request.side.value,
                 request.qty, request.order_type.value, request.limit_price, reason, _now(), parent_id))
        except sqlite3.IntegrityError as exc:
            raise DuplicateOrder(f"order {request.client_order_id} is already journaled") from exc

    def record_parent(self, request: OrderRequest, decided_at: dt.datetime, algo: str, params: dict) -> None:
        """A decided order an execution algorithm works as children (committed before the first
        child is sent). Raises DuplicateOrder if its id is already here (a restarted loop)."""
        try:
            self._write(
                "INSERT INTO parent_orders (client_order_id, run_id, decided_at, symbol, side, qty, algo, params)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (request.client_order_id, self._run(), decided_at.isoformat(), request.symbol, request.side.value,
                 request.qty, algo, json.dumps(params, sort_keys=True, default=str)))
        except sqlite3.IntegrityError as exc:
            raise DuplicateOrder(f"parent order {request.client_order_id} is already journaled") from exc

    def parents(self) -> list[dict]:
        return self._mine("parent_orders", order="decided_at, client_order_id")

    def children(self, parent_id: str) -> list[dict]:
        """The child orders of a parent, in the order they were decided."""
        return self._mine("orders", "parent_id = ?", (parent_id,), order="decided_at, client_order_id")

    def record_intraday_event(self, at: dt.datetime, rule: str, symbol: str | None, action: str, reason: str,
                              client_order_id: str | None = None) -> None:
        """An intraday rule fired (committed at once: it is written before the sell it explains is sent)."""
        self._write("INSERT INTO intraday_events (run_id, at, rule, symbol, action, reason, client_order_id)"
                    " VALUES (?,?,?,?,?,?,?)", (self._run(), at.isoformat(), rule, symbol, action, reason,
                                                client_order_id))

    def intraday_events(self) -> list[dict]:
        return self._mine("intraday_events", order="id")

    def record_marks(self, at: dt.datetime, cash: float, equity: float | None, day_start_equity: float,
                     marks: dict[str, dict]) -> None:
        """The book at live marks at one session-watch poll (what the dashboard shows live)."""
        self._write("INSERT INTO session_marks (run_id, at, cash, equity, day_start_equity, marks)"
                    " VALUES (?,?,?,?,?,?)", (self._run(), at.isoformat(), float(cash),
                                              None if equity is None else float(equity), float(day_start_equity),
                                              json.dumps(marks, sort_keys=True)))

    def session_marks(self, since: dt.datetime | None = None, newest: int | None = None) -> list[dict]:
        """Polls oldest first (`marks` decoded); `since`: from that session time on; `newest`: only
        the latest N. An older journal without the table has none."""
        if not self.query("SELECT name FROM sqlite_master WHERE type='table' AND name='session_marks'"):
            return []
        where, args = ("at >= ?", (since.isoformat(),)) if since is not None else ("", ())
        order = "id" if newest is None else f"id DESC LIMIT {int(newest)}"
        rows = self._mine("session_marks", where, args, order=order)
        for r in rows:
            r["marks"] = json.loads(r["marks"])
        return rows if newest is None else rows[::-1]

    def set_control(self, state: str, reason: str, run_id: str = "*") -> None:
        """The operator's trading state for one run (or '*': all); the loop reads it before each bar's
        orders, so it acts on a running loop and survives a restart. Needs no run id of its own."""
        if state not in ("ACTIVE", "REDUCING", "HALTED"):
            raise ValueError(f"trading state must be ACTIVE, REDUCING or HALTED, got {state!r}")
        self._write("INSERT INTO controls (run_id, state, reason, at) VALUES (?,?,?,?)",
                    (run_id, state, reason, _now()))

    def control(self, run_id: str | None = None) -> dict:
        """The operator's latest word for `run_id` (default: this journal's run): state, reason, at."""
        run = run_id or self.run_id or "*"
        rows = self.query("SELECT state, reason, at, run_id FROM controls WHERE run_id IN ('*', ?)"
                          " ORDER BY id DESC LIMIT 1", (run,))
        return rows[0] if rows else {"state": "ACTIVE", "reason": "", "at": None, "run_id": "*"}

    def record_order(self, order: Order) -> None:
        """The broker's answer, or a later state change, for a journaled order."""
        self._write(
            "UPDATE orders SET state=?, broker_order_id=?, filled_qty=?, reason=?, updated_at=?"
            " WHERE client_order_id=? AND run_id=?",
            (order.status.value, order.broker_order_id, order.filled_qty, order.reason, _now(), order.client_order_id,
             self._run()))

    def record_fill(self, fill: Fill) -> bool:
        """Journal a fill once; False if this fill (same order, same broker fill id) is already here
        (a correction of it, other quantity, price, commission or tax, replaces those numbers)."""
        if not fill.fill_id:
            raise ValueError(f"fill of {fill.client_order_id} has no broker fill id")
        key = (self._run(), fill.client_order_id, fill.fill_id)
        numbers = (fill.qty, fill.price, fill.commission, fill.tax)
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO fills (run_id, client_order_id, broker_order_id, fill_id, symbol, side, qty,"
                " price, commission, tax, filled_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (*key[:2], fill.broker_order_id, fill.fill_id, fill.symbol, fill.side.value, *numbers,
                 fill.filled_at.isoformat()))
            if cur.rowcount == 1:
                return True
            had = self._db.execute("SELECT qty, price, commission, tax FROM fills WHERE run_id=? AND client_order_id=?"
                                   " AND fill_id=?", key).fetchone()
            if had is not None and tuple(had) != numbers:
                self._db.execute("UPDATE fills SET qty=?, price=?, commission=?, tax=? WHERE run_id=? AND"
                                 " client_order_id=? AND fill_id=?", (*numbers, *key))
                log.warning("fill %s %s corrected by the broker: qty/price/commission/tax %s -> %s",
                            fill.client_order_id, fill.fill_id, tuple(had), numbers)
            return False

    def record_account(self, day: dt.date, cash: int, equity: float, positions: dict[str, int],
                       benchmark: float | None = None) -> None:
        self._write("INSERT OR REPLACE INTO account (run_id, day, cash, equity, positions, benchmark)"
                    " VALUES (?,?,?,?,?,?)",
                    (self._run(), day.isoformat(), cash, equity, json.dumps(positions, sort_keys=True), benchmark))

    def record_decision(self, day: dt.date, payload: dict) -> None:
        self._write("INSERT OR REPLACE INTO decisions (run_id, day, payload) VALUES (?,?,?)",
                    (self._run(), day.isoformat(), json.dumps(payload, sort_keys=True)))

    # --- reading back --------------------------------------------------------------------
    def query(self, sql: str, args: tuple = ()) -> list[dict]:
        with self._lock:
            cur = self._db.execute(sql, args)
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, row)) for row in cur.fetchall()]

    def _mine(self, table: str, where: str = "", args: tuple = (), columns: str = "*", order: str = "",
              group: str = "") -> list[dict]:
        """Rows of `table` for this journal's run (every run when opened without one)."""
        clauses = [where] if where else []
        if self.run_id is not None:
            clauses.append("run_id = ?")
            args = (*args, self.run_id)
        sql = f"SELECT {columns} FROM {table}" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        sql += f" GROUP BY {group}" if group else ""
        return self.query(sql + (f" ORDER BY {order}" if order else ""), args)

    def count(self, table: str) -> int:
        """Rows of `table` (orders, fills, account, decisions) for this journal's run, counted by
        SQLite: a watcher's totals never load the rows."""
        if table not in COUNTED:
            raise ValueError(f"no journal table {table!r} to count: choose one of {', '.join(COUNTED)}")
        return int(self._mine(table, columns="COUNT(*) AS n")[0]["n"])

    def runs(self) -> list[str]:
        """Run ids in the journal, the one with the latest account row last."""
        return [r["run_id"] for r in self.query("SELECT run_id, MAX(day) AS last FROM account GROUP BY run_id"
                                                 " ORDER BY last, run_id")]

    def latest_run(self) -> str | None:
        """The run with the latest account row (what a watcher shows), None in an empty journal."""
        rows = self.query("SELECT run_id FROM account ORDER BY day DESC, rowid DESC LIMIT 1")
        return rows[0]["run_id"] if rows else None

    def orders(self, state: str | None = None, newest: int | None = None) -> list[dict]:
        """Oldest first; `newest`: only the latest N, newest first."""
        order = "decided_at, client_order_id" if newest is None else f"decided_at DESC, client_order_id LIMIT {int(newest)}"
        return self._mine("orders", "state = ?" if state else "", (state,) if state else (), order=order)

    def fills(self, newest: int | None = None) -> list[dict]:
        """Oldest first; `newest`: only the latest N, newest first."""
        return self._mine("fills", order="id" if newest is None else f"filled_at DESC, id DESC LIMIT {int(newest)}")

    def accounts(self) -> list[dict]:
        return self._mine("account", order="day")

    def decisions(self) -> list[dict]:
        return self._mine("decisions", order="day")

    def unacknowledged(self) -> list[dict]:
        """Intents with no broker answer: their fate must be checked with the broker first."""
        return self._mine("orders", "state='intent'", order="decided_at")

    def unsettled(self) -> list[dict]:
        """Orders whose fate the venue has not told yet: intents with no answer, and orders sent
        whose outcome is unknown. Nothing more is sent for their symbols until they are settled."""
        return self._mine("orders", "state IN ('intent', 'unknown')", order="decided_at")

    def positions_from_fills(self) -> dict[str, int]:
        rows = self._mine("fills", columns="symbol, SUM(CASE side WHEN 'buy' THEN qty ELSE -qty END) AS q",
                          group="symbol")
        return {r["symbol"]: int(r["q"]) for r in rows if r["q"]}

    def cash_from_fills(self, starting_cash: int) -> int:
        row = self._mine("fills", columns="COALESCE(SUM(CASE side WHEN 'sell' THEN qty*price - commission - tax"
                         " ELSE -(qty*price + commission) END), 0) AS flow")[0]
        return starting_cash + int(row["flow"])


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()
