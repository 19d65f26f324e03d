"""Meta-ensemble: explainable combination, regime priors, online exponential-weights update."""
import json

import numpy as np
import pytest

from strategies.ensemble import EnsembleState, MetaEnsemble
from strategies.pipeline import DecisionConfig


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


class _Member:
    """A fixed-weights agent; optionally refuses the history (look-ahead) or abstains."""

    lookback = 1

    def __init__(self, name, weights, refuse_before=None, abstain=False):
        self.name, self.weights, self.refuse_before, self.abstain = name, np.asarray(weights, float), refuse_before, abstain

    def fit(self, history):
        from strategies.base import LookAheadError
        if self.refuse_before is not None and str(history.dates[-1]) < self.refuse_before:
            raise LookAheadError(f"{self.name}: model saw data up to {self.refuse_before}: look-ahead")

    def target_weights(self, window):
        from strategies.base import AgentAbstains
        if self.abstain:
            raise AgentAbstains(f"{self.name}: the window lacks the model's symbols ['X']")
        return self.weights


def _panel():
    from market.data import load_panel
    return load_panel(symbols=["005930", "000660"], start="2019-01-02", end="2019-12-30")


def test_optional_member_refusing_the_history_is_left_out_with_a_note(capsys):
    from strategies.base import LookAheadError
    from strategies.ensemble import EnsembleAgent

    panel = _panel()
    agent = EnsembleAgent({"a": _Member("a", [0.5, 0.5]), "rl": _Member("rl", [1.0, 0.0], refuse_before="2019-06-28")},
                          risk=None, config=DecisionConfig(rebalance_every=1, construction=None), optional=("rl",))
    agent.fit(panel.upto("2019-03-29"))  # the model saw data after this history: look-ahead, left out
    assert list(agent.members) == ["a"] and "left out rl" in agent.notes[0] and "look-ahead" in agent.notes[0]
    assert "left out rl" in capsys.readouterr().err
    np.testing.assert_allclose(agent.target_weights(panel.upto("2019-04-30")), [0.5, 0.5])
    agent.fit(panel.upto("2019-09-30"))  # a later refit: the model predates it, back in
    assert list(agent.members) == ["a", "rl"]
    w = agent.target_weights(panel.upto("2019-10-31"))
    assert set(agent.last_explanation["agent_weights"]) == {"a", "rl"} and w[0] > 0.5
    required = EnsembleAgent({"a": _Member("a", [0.5, 0.5], refuse_before="2019-06-28")}, risk=None)
    with pytest.raises(LookAheadError):  # a member that is not optional still fails the fit
        required.fit(panel.upto("2019-03-29"))
    with pytest.raises(ValueError, match="not optional"):
        EnsembleAgent({"rl": _Member("rl", [1.0, 0.0])}, optional=("rl",))


def test_member_that_abstains_is_left_out_of_that_decision_only():
    from strategies.ensemble import EnsembleAgent

    panel = _panel()
    rl = _Member("rl", [1.0, 0.0], abstain=True)
    agent = EnsembleAgent({"a": _Member("a", [0.5, 0.5]), "rl": rl}, risk=None,
                          config=DecisionConfig(rebalance_every=1, construction=None), optional=("rl",))
    agent.fit(panel.upto("2019-03-29"))
    np.testing.assert_allclose(agent.target_weights(panel.upto("2019-04-30")), [0.5, 0.5])  # not diluted by cash
    assert set(agent.last_explanation["agent_weights"]) == {"a"}
    assert "lacks the model's symbols" in agent.last_explanation["abstained"]["rl"]
    rl.abstain = False
    agent.target_weights(panel.upto("2019-05-31"))
    assert set(agent.last_explanation["agent_weights"]) == {"a", "rl"} and "abstained" not in agent.last_explanation


def test_rl_agents_have_regime_priors():
    from strategies.ensemble import DEFAULT_PRIORS

    for regime in ("bull", "bear", "sideways"):
        assert {"dqn", "appo"} <= set(DEFAULT_PRIORS[regime])
    assert MetaEnsemble()._prior("some-new-agent", {"bull": 1.0}) == 1.0  # unknown agents: neutral
