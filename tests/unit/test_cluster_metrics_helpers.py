"""Metric helpers outside Ray: no-ops that never break trading; drawdown arithmetic is right."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from actors import metrics

ROOT = Path(__file__).resolve().parents[2]


def test_helpers_are_noops_without_ray():
    """In a fresh interpreter with no Ray session, every helper returns and creates no metric."""
    code = ("from actors import metrics as m; m.record_decision(0.01); m.record_order('buy'); "
            "m.record_fill('sell', 10); m.record_rejection(); m.record_risk(0.01, 0.02, 0.03); "
            "assert abs(m.record_account(90.0, 100.0) - 0.1) < 1e-12; assert m._metrics is None; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


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
