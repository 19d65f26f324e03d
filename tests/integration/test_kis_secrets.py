"""No secret (app key, app secret, account number) in anything a session writes or logs.

A whole session runs against the simulator with DEBUG logging on every logger (urllib3 logs each
request line, and KIS queries carry the account): orders, faults, a failed login, WebSocket
notices, a journal, `data fetch`. Then every file written and every captured log line, message
and exception text is searched for each secret.
"""
from __future__ import annotations

import datetime as dt
import logging
import queue
import time

import pytest

from broker.base import OrderRequest
from broker.journal import Journal
from broker.kis import orders as tr
from broker.kis.auth import TokenCache, approval_key
from broker.kis.config import Credentials
from broker.kis.errors import KisError
from broker.kis.ws import KisWebSocket
from broker.sim.venue import SimVenue
from cluster.commands import data as data_cmd
from market.calendar import decision_time
from tests.integration.kis_helpers import history, replay


@pytest.mark.slow  # > 2 s on a busy 2-core machine: not in the quick loop (README)
def test_no_secret_in_files_logs_or_errors(tmp_path, caplog, capsys, monkeypatch):
    log_file = tmp_path / "session.log"
    handler = logging.FileHandler(log_file)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    venue = SimVenue(10_000_000, workdir=tmp_path / "work", history=history())
    cred = venue.credentials
    try:
        broker, sim = venue.broker, venue.server
        journal = Journal(tmp_path / "journal.sqlite", run_id="t")
        rep = replay().sort("date")
        days = rep["date"].unique().sort().to_list()[:3]
        for i, day in enumerate(days):
            reqs = [OrderRequest(f"s{i}-buy", "005930", "buy", 3), OrderRequest(f"s{i}-big", "000660", "buy", 10_000)]
            if i:
                reqs.append(OrderRequest(f"s{i}-sell", "005930", "sell", 1, "limit", 50_000))
            if i == 1:
                sim.faults.inject("http_500_after", path="order-cash")
                sim.faults.inject("expired_token", path="inquire-daily-ccld")
                sim.faults.inject("rate_limit", path="inquire-balance")
            for req in reqs:
                journal.record_intent(req, decision_time(venue._clock()))
                order = broker.submit(req)
                journal.record_order(order)
                texts += [repr(order), order.reason]
            part = rep.filter(rep["date"] == day)
            bars = {s: (o, h, lo, c) for s, o, h, lo, c in part.select("symbol", "open", "high", "low", "close").rows()}
            new = venue.advance(day.date() if isinstance(day, dt.datetime) else day, bars)
            for f in new:
                journal.record_fill(f)
                texts.append(repr(f))
            broker.confirm_fills(new)
            journal.record_account(venue._clock(), broker.cash(), float(broker.cash()), broker.positions())
        # errors carry KIS codes, never keys
        bad = Credentials("PS" + "x" * 30, cred.app_secret, cred.account)
        with pytest.raises(KisError) as err:
            TokenCache(venue.env, bad, cache_dir=tmp_path / "bad").token()
        texts += [str(err.value), repr(err.value)]
        sim.faults.inject("drop_before", count=2, path="order-cash")
        lost = broker.submit(OrderRequest("lost", "005930", "buy", 1))
        texts += [repr(lost), lost.reason]
        # real-time notices over the WebSocket
        ws = KisWebSocket(venue.env.ws_url, lambda: approval_key(venue.rest.session, venue.env, cred)).start()
        try:
            ws.subscribe(venue.env.notice_tr, cred.hts_id)
            time.sleep(0.2)
            broker.submit(OrderRequest("ws-buy", "005930", "buy", 1))
            try:
                texts.append(repr(ws.fills.get(timeout=0.5)))
            except queue.Empty:
                pass
        finally:
            ws.close()
        texts += [repr(x) for x in (venue, venue.rest, venue.broker, venue.env, cred, venue.rest.tokens)]
        tr.balance(venue.rest)
        # data fetch with keys from the environment
        for k, v in {"KIS_APP_KEY": cred.app_key, "KIS_APP_SECRET": cred.app_secret, "KIS_ACCOUNT": cred.account}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("KRT_KIS_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.chdir(tmp_path)
        import argparse
        parser = argparse.ArgumentParser()
        data_cmd.register(parser.add_subparsers())
        args = parser.parse_args(["data", "fetch", "--symbols", "005930", "--start", "2023-01-01", "--end", "2023-05-31",
                                  "--out", str(tmp_path / "bars.parquet"), "--env", "sim", "--rest-url", venue.env.rest_url])
        assert args.func(args) == 0
        journal.close()
    finally:
        venue.close()
        root.removeHandler(handler)
        handler.close()
    out = capsys.readouterr()
    texts += [caplog.text, out.out, out.err] + [r.getMessage() for r in caplog.records]
    assert any("GET /uapi" in r.getMessage() for r in caplog.records), "DEBUG request logging was not captured"
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 5       # token cache, order-id map, journal, log, parquet
    secrets = cred.secrets() + [cred.account.replace("-", "")]
    blobs = [(str(p), p.read_bytes()) for p in files] + [(f"text {i}", t.encode()) for i, t in enumerate(texts)]
    for secret in secrets:
        for name, blob in blobs:
            assert secret.encode() not in blob, f"a secret leaked into {name}"
