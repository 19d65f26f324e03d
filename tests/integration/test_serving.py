"""The Serve decision endpoint over real HTTP: valid snapshots get valid decisions, bad ones 422."""
import numpy as np
import pytest
import requests

from market.data import load_panel
from serving.schema import DecideResponse

pytestmark = pytest.mark.ray

SYMBOLS = ["005930", "000660", "035420", "005380", "051910"]


@pytest.fixture(scope="module")
def lookback(decide_url):
    health = requests.get(decide_url.replace("/v1/decide", "/healthz"), timeout=60).json()
    assert health["agents"] == ["technical", "factor"]
    return health["lookback"]


@pytest.fixture(scope="module")
def panel():
    return load_panel(symbols=SYMBOLS, start="2019-01-01", end="2023-06-30")


@pytest.fixture(scope="module")
def snapshot(panel, lookback):
    return panel.tail(lookback).to_dict()


def test_valid_request_gets_a_valid_decision(decide_url, snapshot, auth):
    body = {"as_of": snapshot["dates"][-1], "bars": snapshot,
            "portfolio": {"cash": 100_000_000, "positions": {"005930": 10}}}
    resp = requests.post(decide_url, json=body, headers=auth(), timeout=60)
    assert resp.status_code == 200, resp.text
    decision = DecideResponse.model_validate(resp.json())
    assert decision.as_of.isoformat() == snapshot["dates"][-1]
    assert set(decision.targets) == set(SYMBOLS)
    weights = np.array(list(decision.targets.values()))
    assert np.all(weights >= 0) and weights.sum() <= 1 + 1e-9 and weights.max() <= 0.2 + 1e-9
    assert set(decision.agents) == {"technical", "factor"}
    assert sum(a.weight for a in decision.agents.values()) == pytest.approx(1.0)
    assert set(decision.regime) == {"bull", "bear", "sideways"}
    assert sum(decision.regime.values()) == pytest.approx(1.0)
    assert decision.risk["state"] in {"ACTIVE", "REDUCING", "HALTED"}


def test_consecutive_decisions_of_a_run_score_the_agents_online(decide_url, panel, lookback, auth):
    every = requests.get(decide_url.replace("/v1/decide", "/healthz"), timeout=60).json()["rebalance_every"]
    answers = []
    for end in range(-2 * every - 1, 0):  # bar by bar, as the loop asks
        window = panel.rows(len(panel) + end - lookback + 1, len(panel) + end + 1).to_dict()
        resp = requests.post(decide_url, json={"as_of": window["dates"][-1], "bars": window, "run_id": "online"},
                             headers=auth("online"), timeout=120)
        assert resp.status_code == 200, resp.text
        answers.append(resp.json())
    # a decision every `every` bars, holds in between (no agent asked, nothing to send)
    assert [a["rebalance"] for a in answers] == ([True] + [False] * (every - 1)) * 2 + [True]
    assert all(a["agents"] == {} for a in answers if not a["rebalance"])
    # from the second decision on, each agent's previous targets are scored on the returns since
    scores = answers[every]["risk"]["ensemble"]["performance_score"]
    assert any(v != 0.0 for v in scores.values())
    assert answers[-1]["risk"]["ensemble"]["performance_score"] != scores


@pytest.mark.parametrize("mutate,needle", [
    (lambda b: b.pop("as_of"), "as_of"),
    (lambda b: b["bars"]["close"].pop(), "close"),
    (lambda b: b.update(as_of="2099-01-01"), "in the future"),
    (lambda b: b["bars"]["dates"].reverse(), "increasing"),
    (lambda b: b.update(portfolio={"cash": -1, "positions": {}}), "cash"),
    (lambda b: b["bars"].update(symbols="005930"), "symbols"),
])
def test_malformed_request_is_422_naming_the_problem(decide_url, snapshot, mutate, needle, auth):
    body = {"as_of": snapshot["dates"][-1], "bars": {k: (list(v) if isinstance(v, list) else v)
                                                       for k, v in snapshot.items()}}
    body["bars"] = {k: [list(r) if isinstance(r, list) else r for r in v] if isinstance(v, list) else v
                    for k, v in body["bars"].items()}
    mutate(body)
    resp = requests.post(decide_url, json=body, headers=auth(), timeout=60)
    assert resp.status_code == 422, resp.text
    assert needle in resp.text


def test_not_json_is_422(decide_url, auth):
    resp = requests.post(decide_url, data=b"{not json", headers={"content-type": "application/json", **auth()},
                         timeout=60)
    assert resp.status_code == 422
