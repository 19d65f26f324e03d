"""VaR/CVaR against closed forms, risk parity, CVaR-budget sizing, drawdown states, Kupiec."""
import json

import numpy as np
import pytest
from scipy import stats

from strategies.risk import (
    DrawdownProtection,
    RiskModel,
    TradingState,
    ewma_covariance,
    historical_var_cvar,
    kupiec_test,
    normal_var_cvar,
    parametric_var_cvar,
    portfolio_var_cvar,
    risk_contributions,
    risk_parity,
    var_backtest,
)


@pytest.mark.parametrize("alpha", [0.95, 0.99])
def test_var_cvar_match_closed_form_for_normal_returns(alpha):
    mu, sigma = 0.0004, 0.012
    z = stats.norm.ppf(alpha)
    var, cvar = normal_var_cvar(mu, sigma, alpha)
    assert var == pytest.approx(sigma * z - mu)
    assert cvar == pytest.approx(sigma * stats.norm.pdf(z) / (1 - alpha) - mu)
    r = np.random.default_rng(7).normal(mu, sigma, 400_000)
    hv, hc = historical_var_cvar(r, alpha)
    assert hv == pytest.approx(var, rel=0.02) and hc == pytest.approx(cvar, rel=0.02)
    for method in ("normal", "cornish-fisher"):  # CF reduces to normal when skew = kurtosis = 0
        pv, pc = parametric_var_cvar(r, alpha, method)
        assert pv == pytest.approx(var, rel=0.01) and pc == pytest.approx(cvar, rel=0.01)


def test_cornish_fisher_sees_fat_tails_that_normal_misses():
    # moderate tails (t with 8 dof): CF is valid there; with very heavy tails it overshoots
    r = np.random.default_rng(3).standard_t(8, 200_000) * 0.01
    hv = historical_var_cvar(r, 0.99)[0]
    assert abs(parametric_var_cvar(r, 0.99, "cornish-fisher")[0] - hv) < abs(parametric_var_cvar(r, 0.99, "normal")[0] - hv)


def test_ewma_portfolio_var_is_the_normal_formula():
    rng = np.random.default_rng(0)
    r = rng.normal(0, 0.01, (500, 3))
    cov = ewma_covariance(r, 0.94)
    w = np.array([0.5, 0.3, 0.2])
    sigma = np.sqrt(w @ cov @ w)
    assert portfolio_var_cvar(w, cov, 0.99) == pytest.approx(normal_var_cvar(0.0, sigma, 0.99))
    np.testing.assert_allclose(cov, cov.T)


def test_risk_parity_contributions_are_equal():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 6))
    cov = a @ a.T / 6 + np.diag(rng.uniform(0.01, 0.2, 6))
    w = risk_parity(cov)
    assert w.sum() == pytest.approx(1.0) and np.all(w > 0)
    np.testing.assert_allclose(risk_contributions(w, cov), 1 / 6, atol=1e-6)
    b = np.array([3, 1, 1, 1, 1, 1.0])
    np.testing.assert_allclose(risk_contributions(risk_parity(cov, b), cov), b / b.sum(), atol=1e-6)


def test_risk_parity_of_a_singular_covariance_is_defined():
    # a sample covariance with a riskless long-only mix (a hedged pair; more names than independent
    # return rows — what 105 names with short histories gave in reports.strategies_ablation erc):
    # Newton ran y off to infinity along that direction and numpy raised "Singular matrix"
    hedged = np.array([[1.0, -1.0], [-1.0, 1.0]]) * 1e-4
    np.testing.assert_allclose(risk_parity(hedged), [0.5, 0.5])
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.02, size=(5, 12))
    x[:, -1] = -x[:, :-1].sum(axis=1)  # the last name offsets the other eleven: rank 4 of 12
    w = risk_parity(np.cov(x, rowvar=False))
    assert np.all(np.isfinite(w)) and np.all(w > 0) and w.sum() == pytest.approx(1.0)


def test_size_respects_cvar_budget_and_caps():
    rng = np.random.default_rng(2)
    r = rng.normal(0, 0.03, (250, 5))  # volatile assets: the budget must bind
    model = RiskModel(cvar_budget=0.02, budget_alpha=0.99, max_position=0.3, max_gross=1.0)
    w, rep = model.size(np.array([0.25, 0.25, 0.25, 0.25, 0.0]), r)
    assert w[4] == 0 and np.all(w <= 0.3 + 1e-12) and w.sum() <= 1.0
    assert rep["binding"] == "cvar_budget"
    assert max(rep["cvar_99"].values()) <= 0.02 + 1e-9
    json.dumps(rep)  # the report goes over HTTP as is
    calm = rng.normal(0, 0.002, (250, 5))
    w2, rep2 = RiskModel(max_position=0.2).size(np.full(5, 0.2), calm)
    assert w2.sum() == pytest.approx(1.0) and np.all(w2 <= 0.2 + 1e-12)


def test_input_risk_budgets_keep_the_conviction():
    r = np.random.default_rng(6).normal(0, 0.01, (250, 3))
    w_in = np.array([0.6, 0.2, 0.2])
    w, rep = RiskModel(risk_budgets="input", max_position=1.0).size(w_in, r)
    cov = ewma_covariance(r)
    np.testing.assert_allclose(risk_contributions(w, cov), w_in / w_in.sum(), atol=1e-6)
    with pytest.raises(ValueError, match="risk_budgets"):
        RiskModel(risk_budgets="bogus")


def test_protection_states_and_what_each_allows():
    p = DrawdownProtection(reduce_at=0.10, halt_at=0.20, resume_below=0.05, cooldown=3)
    assert p.update(100.0) is TradingState.ACTIVE
    assert p.update(91.0) is TradingState.ACTIVE  # 9% down
    assert p.update(89.0) is TradingState.REDUCING  # 11% down
    target, current = np.array([0.5, 0.1, 0.0]), np.array([0.2, 0.3, 0.1])
    np.testing.assert_array_equal(p.apply(target, current), [0.2, 0.1, 0.0])  # only sells
    assert p.update(93.0) is TradingState.REDUCING  # 7% down: not yet recovered
    assert p.update(96.0) is TradingState.ACTIVE  # 4% down
    assert p.update(79.0) is TradingState.HALTED  # 21% down
    np.testing.assert_array_equal(p.apply(target, current), 0.0)  # no buys, close out
    restored = DrawdownProtection.from_dict(json.loads(json.dumps(p.to_dict())))
    assert restored == p
    assert p.update(85.0) is TradingState.HALTED
    assert p.update(85.0) is TradingState.HALTED
    assert p.update(84.0) is TradingState.REDUCING  # cooldown over; high-water mark reset to 84
    assert p.peak == 84.0
    assert p.update(84.5) is TradingState.ACTIVE
    with pytest.raises(ValueError, match="equity"):
        p.update(-1.0)


def test_reducing_ends_after_the_cooldown_even_without_recovery():
    p = DrawdownProtection(reduce_at=0.10, halt_at=0.20, resume_below=0.05, cooldown=3)
    p.update(100.0)
    assert p.update(88.0) is TradingState.REDUCING
    assert p.update(88.0) is TradingState.REDUCING
    assert p.update(88.0) is TradingState.REDUCING
    assert p.update(88.0) is TradingState.ACTIVE and p.peak == 88.0  # mark reset: a fresh start
    assert p.update(78.0) is TradingState.REDUCING  # 11% below the new mark


def test_size_applies_the_protection_state_from_account_state():
    r = np.random.default_rng(4).normal(0, 0.01, (250, 3))
    model = RiskModel()
    prot = DrawdownProtection().to_dict()
    _, rep = model.size(np.full(3, 0.3), r, {"equity": 100.0, "protection": prot})
    w, rep = model.size(np.full(3, 0.3), r, {"equity": 85.0, "weights": np.array([0.1, 0.0, 0.2]),
                                              "protection": rep["protection"]})
    assert rep["state"] == "REDUCING" and np.all(w <= np.array([0.1, 0.0, 0.2]) + 1e-12)
    with pytest.raises(ValueError, match="returns_window"):
        model.size(np.full(3, 0.3), r[:, :2])


def test_kupiec():
    exact = kupiec_test(5, 100, 0.95)
    assert exact["lr"] == pytest.approx(0.0, abs=1e-12) and exact["p_value"] == pytest.approx(1.0)
    k = kupiec_test(15, 100, 0.95)
    lr = -2 * (85 * np.log(0.95) + 15 * np.log(0.05) - 85 * np.log(0.85) - 15 * np.log(0.15))
    assert k["lr"] == pytest.approx(lr) and k["p_value"] < 0.001
    zero = kupiec_test(0, 100, 0.95)
    assert zero["lr"] == pytest.approx(-2 * 100 * np.log(0.95))
    # a calibrated VaR on iid normal returns breaches about 5% of days
    bt = var_backtest(np.random.default_rng(5).normal(0, 0.01, 2250), 250, 0.95, "historical")
    assert 0.035 < bt["rate"] < 0.065 and bt["n"] == 2000
