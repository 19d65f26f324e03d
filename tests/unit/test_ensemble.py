"""Meta-ensemble: explainable combination, regime priors, online exponential-weights update."""
import json

import numpy as np
import pytest

from strategies.ensemble import EnsembleState, MetaEnsemble


def _targets():
    return {"a": np.array([0.5, 0.5, 0.0]), "b": np.array([0.0, 0.2, 0.8])}


def test_combine_is_a_convex_mix_with_an_explanation():
    meta = MetaEnsemble(regime_priors={}, min_share=0.0)
    w, ex = meta.combine(_targets(), None, None, symbols=["X", "Y", "Z"])
    assert ex["agent_weights"] == pytest.approx({"a": 0.5, "b": 0.5})
    np.testing.assert_allclose(w, [0.25, 0.35, 0.4])
    top = ex["top_positions"][0]
    assert top["symbol"] == "Z" and top["from"] == pytest.approx({"a": 0.0, "b": 0.4})
    json.dumps(ex)


def test_regime_probabilities_shift_weight_by_the_priors():
    meta = MetaEnsemble(regime_priors={"bull": {"a": 3.0, "b": 1.0}, "bear": {"a": 1.0, "b": 3.0}}, min_share=0.0)
    bull = meta.combine(_targets(), {"bull": 1.0, "bear": 0.0, "sideways": 0.0})[1]["agent_weights"]
    bear = meta.combine(_targets(), {"bull": 0.0, "bear": 1.0, "sideways": 0.0})[1]["agent_weights"]
    mixed = meta.combine(_targets(), {"bull": 0.5, "bear": 0.5, "sideways": 0.0})[1]["agent_weights"]
    assert bull["a"] == pytest.approx(0.75) and bear["b"] == pytest.approx(0.75)
    assert mixed["a"] == pytest.approx(0.5)


def test_online_update_moves_weight_to_the_agent_that_earned_more_and_state_is_json():
    meta = MetaEnsemble(regime_priors={}, eta=20.0, decay=0.95, min_share=0.05)
    state = EnsembleState()
    for _ in range(20):
        _, ex = meta.combine(_targets(), None, state)
        state = meta.remember(state, _targets(), "2023-01-02")
        state = EnsembleState.from_dict(json.loads(json.dumps(state.to_dict())))  # a Serve round trip
        state = meta.update(state, np.array([0.01, 0.0, -0.01]))  # a wins, b loses
    aw = meta.combine(_targets(), None, state)[1]["agent_weights"]
    assert aw["a"] > 0.9 and aw["b"] >= 0.05 - 1e-12  # floored, never switched off
    assert state.updates == 20 and state.scores["a"] > 0 > state.scores["b"]


def test_bad_input_is_rejected():
    meta = MetaEnsemble()
    with pytest.raises(ValueError, match="agent 'x'"):
        meta.combine({"x": np.array([0.7, 0.7])})
    with pytest.raises(ValueError, match="at least one"):
        meta.combine({})
    with pytest.raises(ValueError, match="shape"):
        meta.update(EnsembleState(), np.zeros(3), {"a": np.zeros(2)})
