"""`trader demo --broker sim` against `--broker paper`: the same loop, the same bars, the same
orders, fills, end-of-day accounts and metrics — the sim run going through the real KIS client
and the local KIS-protocol server inside the execution actor."""
import pytest

from broker.journal import Journal
from cluster.demo import write_report
from cluster.trading_loop import ReplayConfig, run_replay

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _rows(path, sql):
    j = Journal(path)
    try:
        rows = j.query(sql)
    finally:
        j.close()
    for r in rows:   # client ids carry the run id: compare what follows it
        if "client_order_id" in r:
            r["client_order_id"] = r["client_order_id"].split("-", 1)[1]
    return rows


def test_demo_sim_equals_demo_paper(decide_url, tmp_path):
    results = {}
    for venue in ("paper", "sim"):
        out = tmp_path / venue
        out.mkdir()
        config = ReplayConfig(out=out, days=12, n_symbols=6, cash=30_000_000, venue=venue)
        stats = run_replay(config, decide_url, out / "journal.sqlite", progress=False)
        metrics = write_report(out / "journal.sqlite", out, stats)
        results[venue] = (stats, metrics, out / "journal.sqlite")
    (ps, pm, pj), (ss, sm, sj) = results["paper"], results["sim"]
    assert ps["fills"] > 0 and ps == ss
    assert {k: v for k, v in pm.items() if k != "seconds"} == {k: v for k, v in sm.items() if k != "seconds"}
    for sql in ("SELECT client_order_id, symbol, side, qty, price, commission, tax, filled_at FROM fills ORDER BY id",
                "SELECT client_order_id, symbol, side, qty, order_type, state, filled_qty FROM orders ORDER BY decided_at, client_order_id",
                "SELECT day, cash, equity, positions FROM account ORDER BY day"):
        assert _rows(pj, sql) == _rows(sj, sql), sql
