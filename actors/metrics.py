"""Prometheus metrics of the trading loop, through Ray's metrics API (ray.util.metrics).

Actors and Serve replicas call the `record_*` helpers; Ray's metrics agent on each node exports
them on the node's metrics export port (`ray start --metrics-export-port`, or
`ray.nodes()[i]["MetricsExportPort"]`) with the `ray_` prefix, e.g. `ray_krt_decisions_total`,
so they show in the Ray dashboard's metrics view (Prometheus/Grafana) next to Ray's own.

Metric objects are created lazily, once per process: a Ray metric belongs to the worker that
records it. Outside a Ray worker (plain-Python paper runs, unit tests) every helper is a no-op,
so code can call them unconditionally and trading never depends on metrics.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

# Buckets for decision latency in seconds: Serve round trips are ~10-60 ms on 2 cores, an
# ensemble that refits can take seconds.
LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]

NAMES = {
    "decisions": "krt_decisions",
    "decision_latency": "krt_decision_latency_s",
    "orders": "krt_orders",
    "fills": "krt_fills",
    "rejections": "krt_rejections",
    "equity": "krt_equity_krw",
    "drawdown": "krt_drawdown",
    "var": "krt_var",
    "cvar": "krt_cvar",
    "var_budget": "krt_var_budget",
}

_lock = threading.Lock()
_metrics: dict | None = None


def _ray_ready() -> bool:
    try:
        import ray
        return ray.is_initialized()
    except Exception:  # ray missing or half-torn-down: metrics are optional
        return False


def _get() -> dict | None:
    """The metric objects of this process, or None when not inside a Ray worker/driver."""
    global _metrics
    if _metrics is not None:
        return _metrics
    if not _ray_ready():
        return None
    from ray.util.metrics import Counter, Gauge, Histogram
    with _lock:
        if _metrics is None:
            _metrics = {
                "decisions": Counter(NAMES["decisions"], "Target-weight decisions made",
                                     tag_keys=("component",)),
                "decision_latency": Histogram(NAMES["decision_latency"], "Seconds from snapshot to sized targets",
                                              boundaries=LATENCY_BUCKETS_S, tag_keys=("component",)),
                "orders": Counter(NAMES["orders"], "Orders sent to the broker", tag_keys=("side", "mode")),
                "fills": Counter(NAMES["fills"], "Fills received (shares)", tag_keys=("side", "mode")),
                "rejections": Counter(NAMES["rejections"], "Orders refused (broker or kill switch)",
                                      tag_keys=("source", "mode")),
                "equity": Gauge(NAMES["equity"], "Account equity in KRW (cash + holdings at last close)",
                                tag_keys=("mode",)),
                "drawdown": Gauge(NAMES["drawdown"], "Drawdown from the equity peak, fraction (0 = at peak)",
                                  tag_keys=("mode",)),
                "var": Gauge(NAMES["var"], "One-day 95% value at risk of the targets, fraction of equity"),
                "cvar": Gauge(NAMES["cvar"], "One-day 95% conditional VaR of the targets, fraction of equity"),
                "var_budget": Gauge(NAMES["var_budget"], "Risk (CVaR) budget, fraction of equity"),
            }
    return _metrics


def record_decision(latency_s: float, component: str = "ensemble") -> None:
    m = _get()
    if m is None:
        return
    tags = {"component": component}
    m["decisions"].inc(1, tags=tags)
    m["decision_latency"].observe(max(0.0, float(latency_s)), tags=tags)


@contextmanager
def timed_decision(component: str = "ensemble"):
    """`with timed_decision("serve"): ...` counts one decision and records its latency."""
    start = time.perf_counter()
    yield
    record_decision(time.perf_counter() - start, component)


def record_order(side: str, mode: str = "paper") -> None:
    m = _get()
    if m is not None:
        m["orders"].inc(1, tags={"side": str(getattr(side, "value", side)), "mode": mode})


def record_fill(side: str, qty: int, mode: str = "paper") -> None:
    m = _get()
    if m is not None and qty > 0:
        m["fills"].inc(float(qty), tags={"side": str(getattr(side, "value", side)), "mode": mode})


def record_rejection(source: str = "broker", mode: str = "paper") -> None:
    """`source`: who refused — "broker", "kill_switch", "risk" (a short code, not the free-text reason)."""
    m = _get()
    if m is not None:
        m["rejections"].inc(1, tags={"source": source, "mode": mode})


def record_account(equity: float, peak_equity: float, mode: str = "paper") -> float:
    """Set equity and drawdown gauges; returns the drawdown (0 at the peak, 0.1 = 10% below it)."""
    if peak_equity <= 0:
        raise ValueError(f"peak equity must be positive, got {peak_equity!r}")
    drawdown = max(0.0, 1.0 - float(equity) / float(peak_equity))
    m = _get()
    if m is not None:
        m["equity"].set(float(equity), tags={"mode": mode})
        m["drawdown"].set(drawdown, tags={"mode": mode})
    return drawdown


def record_risk(var: float, cvar: float | None = None, budget: float | None = None) -> None:
    m = _get()
    if m is None:
        return
    m["var"].set(float(var))
    if cvar is not None:
        m["cvar"].set(float(cvar))
    if budget is not None:
        m["var_budget"].set(float(budget))


def risk_from_report(report: dict | None) -> dict:
    """VaR, CVaR, budget and trading state from a risk report, whatever its shape.

    The decision service's report (strategies/risk.py) holds `var_95` / `cvar_99` as
    {"historical": x, "ewma_normal": y} and the protection `state`; flat numbers under
    `var`/`cvar`/`budget` are read as they are. Where two estimates exist the larger one is
    taken, as the risk model itself does when it sizes to the CVaR budget.
    """
    if not isinstance(report, dict):
        return {}

    def pick(*keys):
        for k in keys:
            v = report.get(k)
            if isinstance(v, dict):
                nums = [x for x in v.values() if isinstance(x, (int, float))]
                if nums:
                    return float(max(nums))
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
        return None

    out = {"var": pick("var", "var_95", "var_99"), "cvar": pick("cvar", "cvar_99", "cvar_95"),
           "budget": pick("budget", "cvar_budget", "var_budget"),
           "state": report.get("state") or report.get("trading_state")}
    return {k: v for k, v in out.items() if v is not None}
