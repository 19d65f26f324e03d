"""The journal is the truth: fills identified by run, client order id and broker fill id; every
row keyed by its run; one step's writes land together; an older file is refused by name."""
from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from broker.base import Fill, OrderRequest, Side
from broker.journal import Journal, JournalError

AT = dt.datetime(2023, 6, 2, 9, 0, tzinfo=dt.timezone.utc)


def _fill(cid: str, odno: str, fill_id: str, qty: int = 5, price: int = 70_000) -> Fill:
    return Fill(cid, odno, "005930", Side.BUY, qty, price, 10, 0, AT, fill_id=fill_id)


def _intent(j: Journal, cid: str) -> None:
    j.record_intent(OrderRequest(cid, "005930", "buy", 10), AT)


def test_a_rerun_that_reuses_broker_order_ids_keeps_every_fill(tmp_path):
    # a paper broker numbers its orders from 1 in every run: P000000001 comes back in the next run
    for run in ("run-a", "run-b"):
        j = Journal(tmp_path / "j.sqlite", run_id=run)
        _intent(j, f"{run}-1")
        assert j.record_fill(_fill(f"{run}-1", "P000000001", "all"))
        j.close()
    every = Journal(tmp_path / "j.sqlite")
    assert len(every.fills()) == 2                                   # was 1: the second run's fill vanished
    assert Journal(tmp_path / "j.sqlite", run_id="run-b").positions_from_fills() == {"005930": 5}


def test_two_equal_partial_fills_of_one_order_are_two_fills(tmp_path):
    j = Journal(tmp_path / "j.sqlite", run_id="r")
    _intent(j, "r-1")
    assert j.record_fill(_fill("r-1", "0001", "ccld5"))
    assert j.record_fill(_fill("r-1", "0001", "ccld10"))             # same day, qty and price
    assert not j.record_fill(_fill("r-1", "0001", "ccld10"))         # reported again: once
    assert j.positions_from_fills() == {"005930": 10}


def test_account_rows_of_two_runs_do_not_overwrite_each_other(tmp_path):
    day = dt.date(2023, 6, 2)
    for run, cash in (("a", 100), ("b", 200)):
        j = Journal(tmp_path / "j.sqlite", run_id=run)
        j.record_account(day, cash, float(cash), {})
        j.record_decision(day, {"targets": {}, "run": run})
        j.close()
    assert [r["cash"] for r in Journal(tmp_path / "j.sqlite", run_id="a").accounts()] == [100]
    assert [r["cash"] for r in Journal(tmp_path / "j.sqlite", run_id="b").accounts()] == [200]
    assert Journal(tmp_path / "j.sqlite").runs() == ["a", "b"]


def test_a_step_is_written_whole_or_not_at_all(tmp_path):
    j = Journal(tmp_path / "j.sqlite", run_id="r")
    _intent(j, "r-1")
    with pytest.raises(RuntimeError, match="venue died"):
        with j.transaction():
            j.record_fill(_fill("r-1", "0001", "ccld10", qty=10))
            j.record_account(dt.date(2023, 6, 2), 0, 0.0, {"005930": 10})
            raise RuntimeError("venue died")
    assert j.fills() == [] and j.accounts() == []
    with j.transaction():
        j.record_fill(_fill("r-1", "0001", "ccld10", qty=10))
        j.record_account(dt.date(2023, 6, 2), 0, 0.0, {"005930": 10})
    assert len(j.fills()) == 1 and len(j.accounts()) == 1


def test_an_intent_is_committed_on_its_own_before_the_send(tmp_path):
    j = Journal(tmp_path / "j.sqlite", run_id="r")
    with pytest.raises(JournalError, match="before it is sent"):
        with j.transaction():
            _intent(j, "r-1")
    assert j.orders() == []


def test_a_journal_without_a_run_id_reads_but_never_writes(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    with pytest.raises(JournalError, match="without a run id"):
        j.record_account(dt.date(2023, 6, 2), 0, 0.0, {})


def test_a_journal_of_the_earlier_schema_is_refused_by_name(tmp_path):
    old = tmp_path / "old.sqlite"
    db = sqlite3.connect(old)
    db.execute("CREATE TABLE account (day TEXT PRIMARY KEY, cash INTEGER, equity REAL, positions TEXT)")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="old.sqlite was written by an earlier version"):
        Journal(old, run_id="r")


def test_counts_are_the_runs_own_and_name_a_bad_table(tmp_path):
    for run, n in (("a", 3), ("b", 1)):
        j = Journal(tmp_path / "j.sqlite", run_id=run)
        for i in range(n):
            _intent(j, f"{run}-{i}")
            j.record_fill(_fill(f"{run}-{i}", f"{run}000{i}", "ccld5"))
        j.close()
    a = Journal(tmp_path / "j.sqlite", run_id="a")
    assert (a.count("orders"), a.count("fills"), a.count("account")) == (3, 3, 0)
    every = Journal(tmp_path / "j.sqlite")
    assert (every.count("orders"), every.count("fills")) == (4, 4) == (len(every.orders()), len(every.fills()))
    with pytest.raises(ValueError, match="orders, fills"):
        a.count("orders; DROP TABLE fills")
