"""Metric helpers outside Ray: no-ops that never break trading; drawdown arithmetic is right."""
from __future__ import annotations

import pytest

from actors import metrics


def test_helpers_are_noops_without_ray():
    import ray
    if ray.is_initialized():
        pytest.skip("a Ray session is active in this process")
    metrics.record_decision(0.01)
    metrics.record_order("buy")
    metrics.record_fill("sell", 10)
    metrics.record_rejection()
    metrics.record_risk(0.01, 0.02, 0.03)
    assert metrics._metrics is None  # nothing was created outside a Ray worker


def test_drawdown():
    assert metrics.record_account(100.0, 100.0) == 0.0
    assert metrics.record_account(80.0, 100.0) == pytest.approx(0.2)
    assert metrics.record_account(120.0, 100.0) == 0.0  # a stale peak never gives negative drawdown
    with pytest.raises(ValueError, match="peak equity"):
        metrics.record_account(1.0, 0.0)


def test_risk_figures_from_the_decision_service_report():
    report = {"state": "REDUCING", "var_95": {"historical": 0.011, "ewma_normal": 0.013},
              "cvar_99": {"historical": 0.025, "ewma_normal": 0.021}, "gross": 0.8}
    assert metrics.risk_from_report(report) == {"var": 0.013, "cvar": 0.025, "state": "REDUCING"}
    assert metrics.risk_from_report({"var": 0.01, "cvar": 0.02, "budget": 0.03}) == \
        {"var": 0.01, "cvar": 0.02, "budget": 0.03}
    assert metrics.risk_from_report(None) == {} and metrics.risk_from_report({"gross": 0.0}) == {}
