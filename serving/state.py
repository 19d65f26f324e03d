"""Durable decision state: one row per run id, outside every Serve replica.

`DecisionStore` is the SQLite file (plain code): per run id the state (strategies/pipeline.py
`DecisionState` as JSON: member scores, remembered targets, the ACTIVE / REDUCING / HALTED
protection), the last answer (a repeated request for the same bar gets it back instead of being
scored twice) and a version. `put` is a compare-and-set on the version, so two replicas racing
on one run cannot both write: the loser gets a conflict and nothing is lost.

`DecisionStateActor` holds the store for the cluster (replicas on other nodes cannot share a
SQLite file); every `put` is committed before it returns, so the file is the checkpoint: a
restarted actor (max_restarts=-1), or a new app on the same file, continues every run exactly.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import threading
from pathlib import Path

from strategies.pipeline import StateConflict

SCHEMA = """
CREATE TABLE IF NOT EXISTS decision_state (
    run_id     TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    state      TEXT NOT NULL,   -- JSON DecisionState
    answer     TEXT NOT NULL,   -- JSON DecideResponse of the last bar answered
    updated_at TEXT NOT NULL
);
"""


class DecisionStore:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def get(self, run_id: str) -> dict | None:
        """{"version", "state", "answer"} of the run, or None for a run never decided."""
        with self._lock:
            row = self._db.execute("SELECT version, state, answer FROM decision_state WHERE run_id=?",
                                   (run_id,)).fetchone()
        if row is None:
            return None
        return {"version": row[0], "state": json.loads(row[1]), "answer": json.loads(row[2])}

    def put(self, run_id: str, expected_version: int, state: dict, answer: dict) -> int:
        """Write the run's new state if its version is still `expected_version` (0: a new run).
        Returns the new version; StateConflict if another writer got there first. A retried put
        of the very same answer (a caller that lost the reply) succeeds without writing again."""
        s, a = json.dumps(state, sort_keys=True), json.dumps(answer, sort_keys=True)
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT version, answer FROM decision_state WHERE run_id=?",
                                       (run_id,)).fetchone()
                current = 0 if row is None else row[0]
                if current != expected_version:
                    if row is not None and current == expected_version + 1 and row[1] == a:
                        self._db.execute("COMMIT")
                        return current
                    raise StateConflict(f"run {run_id}: the decision state moved on (version {current}, "
                                        f"expected {expected_version}): another request decided this run")
                if row is None:
                    self._db.execute("INSERT INTO decision_state VALUES (?,?,?,?,?)", (run_id, 1, s, a, now))
                else:
                    self._db.execute("UPDATE decision_state SET version=?, state=?, answer=?, updated_at=? "
                                     "WHERE run_id=?", (current + 1, s, a, now, run_id))
                self._db.execute("COMMIT")
                return current + 1
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self._db.close()


def default_state_path() -> Path:
    import os

    return Path(os.environ.get("KRT_CACHE_DIR", Path.home() / ".cache" / "kis-ray-trader")) / "decision_state.sqlite"


def state_actor_name(path: Path | str) -> str:
    return "decision-state:" + hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:10]


def get_or_create_state_actor(path: Path | str):
    """The one named DecisionStateActor for a state file (created on first use, then shared)."""
    import ray

    from actors import NAMESPACE

    actor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(DecisionStore)
    return actor.options(name=state_actor_name(path), namespace=NAMESPACE, get_if_exists=True,
                         lifetime="detached").remote(str(Path(path).resolve()))
