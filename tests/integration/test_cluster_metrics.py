"""Metrics recorded by an actor come out of Ray's Prometheus export port with the right values."""
from __future__ import annotations

import re
import time
import urllib.request

import pytest

from actors import metrics

pytestmark = pytest.mark.ray
MODE = "metrics-test"  # tag values no real loop uses: other tests in the session export metrics too


def _scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def _samples(text: str, name: str) -> list[float]:
    return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")]


def _value(text: str, name: str, **tags) -> float | None:
    """Sum of the samples of `name` whose labels include `tags` (over worker ids)."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(labels.get(k) == v for k, v in tags.items()):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


def test_actor_metrics_are_scraped_from_ray_export_port(ray_local):
    ray = ray_local

    @ray.remote(num_cpus=0)
    class FakeLoop:  # records exactly what an execution actor records for one trading day
        def day(self):
            with metrics.timed_decision("t-serve"):
                time.sleep(0.02)
            metrics.record_decision(0.2, "t-ensemble")
            metrics.record_order("buy", mode=MODE)
            metrics.record_order("buy", mode=MODE)
            metrics.record_order("sell", mode=MODE)
            metrics.record_fill("buy", 30, mode=MODE)
            metrics.record_rejection("t-kill", mode=MODE)
            dd = metrics.record_account(95_000_000, 100_000_000, mode=MODE)
            metrics.record_risk(0.0123, 0.0188, 0.02)  # gauges: last value wins
            return dd

    loop = FakeLoop.remote()
    assert ray.get(loop.day.remote()) == pytest.approx(0.05)
    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
    deadline = time.time() + 90
    text = ""
    while time.time() < deadline:  # the agent exports on its report interval (a few seconds)
        text = _scrape(port)
        if _value(text, "ray_krt_var_budget") is not None and _value(text, "ray_krt_fills_total") is not None:
            break
        time.sleep(2)
    assert _value(text, "ray_krt_decisions_total", component="t-serve") == 1
    assert _value(text, "ray_krt_decisions_total", component="t-ensemble") == 1
    assert _value(text, "ray_krt_decision_latency_s_count", component="t-serve") == 1
    # 0.2 s falls in the 0.25 s bucket, not in the 0.1 s one
    assert _value(text, "ray_krt_decision_latency_s_bucket", component="t-ensemble", le="0.1") == 0
    assert _value(text, "ray_krt_decision_latency_s_bucket", component="t-ensemble", le="0.25") == 1
    assert _value(text, "ray_krt_orders_total", side="buy", mode=MODE) == 2
    assert _value(text, "ray_krt_orders_total", side="sell", mode=MODE) == 1
    assert _value(text, "ray_krt_fills_total", side="buy", mode=MODE) == 30
    assert _value(text, "ray_krt_rejections_total", source="t-kill") == 1
    assert _value(text, "ray_krt_equity_krw", mode=MODE) == 95_000_000
    assert _value(text, "ray_krt_drawdown", mode=MODE) == pytest.approx(0.05)
    # untagged gauges: one sample per worker; the fake loop's worker reports these
    assert any(abs(v - 0.0123) < 1e-9 for v in _samples(text, "ray_krt_var"))
    assert any(abs(v - 0.0188) < 1e-9 for v in _samples(text, "ray_krt_cvar"))


def test_trading_loop_and_serve_export_their_metrics(decide_url, tmp_path):
    """The real loop (ExecutionActor → Serve → PaperBroker) exports decisions, orders, fills, equity."""
    import ray

    from cluster.trading_loop import ReplayConfig, run_replay

    stats = run_replay(ReplayConfig(out=tmp_path, days=5, n_symbols=4, cash=50_000_000), decide_url,
                     tmp_path / "journal.sqlite", progress=False)
    assert stats["decisions"] == 5 and stats["orders"] > 0
    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
    deadline = time.time() + 90
    text = ""
    while time.time() < deadline:
        text = _scrape(port)
        if (_value(text, "ray_krt_decisions_total", component="execution") or 0) >= 5 and \
                _value(text, "ray_krt_decisions_total", component="serve") and \
                _value(text, "ray_krt_equity_krw", mode="paper") is not None:
            break
        time.sleep(2)
    assert _value(text, "ray_krt_decisions_total", component="execution") >= 5
    assert _value(text, "ray_krt_decisions_total", component="serve") >= 5
    assert _value(text, "ray_krt_orders_total", mode="paper") >= stats["orders"]
    assert _value(text, "ray_krt_fills_total", mode="paper") > 0
    assert _value(text, "ray_krt_equity_krw", mode="paper") > 0
