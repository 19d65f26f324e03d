"""The whole loop on local Ray: MarketState → Serve over HTTP → orders → PaperBroker → journal."""
import sqlite3

import pytest

from broker.base import OrderRequest, Side
from broker.journal import Journal
from cluster.demo import write_report
from cluster.trading_loop import ReplayConfig, run_replay

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CASH = 50_000_000


def test_loop_over_30_bars_journal_agrees_with_broker_to_the_won(decide_url, tmp_path):
    config = ReplayConfig(out=tmp_path, days=30, n_symbols=8, cash=CASH)
    journal_path = tmp_path / "journal.sqlite"
    stats = run_replay(config, decide_url, journal_path, progress=False)

    journal = Journal(journal_path)
    assert stats["orders"] > 0 and stats["fills"] > 0
    # positions and cash rebuilt from the journaled fills equal the broker's own books exactly
    assert journal.positions_from_fills() == stats["positions"]
    assert journal.cash_from_fills(CASH) == stats["cash"]
    last = journal.query("SELECT cash, positions FROM account ORDER BY day DESC LIMIT 1")[0]
    assert last["cash"] == stats["cash"]
    # every order was journaled before it was sent and has a final broker answer
    assert journal.unacknowledged() == []
    states = {r["state"] for r in journal.query("SELECT state FROM orders")}
    assert states <= {"filled", "partial", "expired", "rejected", "cancelled"}
    # each fill belongs to a journaled order, at a price on the 2023 tick grid
    for f in journal.query("SELECT f.price, o.symbol FROM fills f JOIN orders o USING (client_order_id)"):
        tick = 1 if f["price"] < 2000 else 5 if f["price"] < 5000 else 10 if f["price"] < 20000 else \
            50 if f["price"] < 50000 else 100 if f["price"] < 200000 else 500 if f["price"] < 500000 else 1000
        assert f["price"] % tick == 0
    assert len(journal.query("SELECT day FROM account")) == 31  # opening day + 30 traded bars
    assert len(journal.query("SELECT day FROM decisions")) == 30
    journal.close()

    metrics = write_report(journal_path, tmp_path, stats)
    for key in ("total_return", "annual_return", "annual_volatility", "sharpe", "max_drawdown", "turnover", "orders"):
        assert key in metrics
    assert metrics["max_drawdown"] <= 0
    assert (tmp_path / "equity.png").stat().st_size > 10_000


def test_journal_rejects_a_second_send_of_the_same_decision(tmp_path):
    import datetime as dt

    j = Journal(tmp_path / "j.sqlite", run_id="t")
    req = OrderRequest("run-20231228-005930-B", "005930", Side.BUY, 3)
    j.record_intent(req, dt.datetime(2023, 12, 28, 15, 30))
    with pytest.raises(Exception, match="already journaled"):
        j.record_intent(req, dt.datetime(2023, 12, 28, 15, 30))
    assert sqlite3.connect(tmp_path / "j.sqlite").execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 1
