"""Decision state outside the replica (serving/state.py), over real HTTP against real Serve.

One run's decisions are the same whichever replica answers, after its replica is killed, and
after the whole app (and the state actor) is restarted on the same state file; a HALTED book
stays HALTED across a restart; nothing another caller sends can move a run's state.
Two small apps serve the technical agent only (a decision is then cheap): "state1" with one
replica, "state2" with two, both on the session's Serve and one state file.
"""
import time
from urllib.parse import urlparse

import pytest
import ray
import requests
from ray import serve

from market.data import load_panel

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SYMBOLS = ["005930", "000660", "035720", "105560"]  # a universe no other test uses
BARS = 15  # three decisions (every 5 bars) and the holds in between


@pytest.fixture(scope="module")
def world(decide_url, tmp_path_factory):
    from cluster.trading_loop import deploy_decision_service
    from serving.champions import ServedAgents
    from strategies.pipeline import DecisionConfig

    port = urlparse(decide_url).port
    state = tmp_path_factory.mktemp("state") / "decision_state.sqlite"

    # "halts": the ERC risk layer, whose drawdown protection has a hard HALTED state (the default
    # overlay only brakes: down to half the gross at 25 % below the peak, never flat)
    configs = {"halts": DecisionConfig(risk_layer="erc")}

    def state_of(name):   # "halts" keeps its own file (and state actor): restarts of one app leave the other
        return state.with_name("halts.sqlite") if name == "halts" else state

    def deploy(name, replicas=1):
        return deploy_decision_service(["technical"], port, served=ServedAgents(agents=["technical"]), name=name,
                                       route_prefix=f"/{name}", state_path=state_of(name), replicas=replicas,
                                       config=configs.get(name))
    urls = {"state1": deploy("state1"), "state2": deploy("state2", replicas=2), "halts": deploy("halts")}
    lookback = requests.get(urls["state1"].replace("/v1/decide", "/healthz"), timeout=60).json()["lookback"]
    panel = load_panel(symbols=SYMBOLS, start="2021-01-01", end="2022-12-30")
    windows = [panel.rows(len(panel) - BARS - lookback + 1 + k, len(panel) - BARS + 1 + k).to_dict()
               for k in range(BARS)]
    yield {"urls": urls, "deploy": deploy, "windows": windows, "state_of": state_of}
    for name in urls:
        serve.delete(name)


def ask(url, auth, window, run_id, cash=100_000_000, positions=None):
    body = {"as_of": window["dates"][-1], "bars": window, "run_id": run_id,
            "portfolio": {"cash": cash, "positions": positions or {}}}
    return requests.post(url, json=body, headers=auth(run_id), timeout=120)


def answer(resp):
    assert resp.status_code == 200, resp.text
    out = resp.json()
    out.pop("run_id")
    return out


def wait_healthy(url, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(url.replace("/v1/decide", "/healthz"), timeout=10).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not come back")


def restart_app(world, name):
    """The whole app goes away (its replicas and the state actor), then is deployed again."""
    from actors import NAMESPACE
    from serving.state import state_actor_name

    serve.delete(name)
    ray.kill(ray.get_actor(state_actor_name(world["state_of"](name)), namespace=NAMESPACE), no_restart=True)
    world["deploy"](name)
    wait_healthy(world["urls"][name])


@pytest.fixture(scope="module")
def reference(world, auth):
    """An uninterrupted run on one replica."""
    return [answer(ask(world["urls"]["state1"], auth, w, "reference")) for w in world["windows"]]


def test_two_replicas_answer_as_one(world, auth, reference):
    served_by, answers = set(), []
    for w in world["windows"]:
        resp = ask(world["urls"]["state2"], auth, w, "two-replicas")
        served_by.add(resp.headers["X-Replica"])
        answers.append(answer(resp))
    assert [a["rebalance"] for a in reference] == [True, False, False, False, False] * 3
    assert len(served_by) == 2  # both replicas answered parts of the run
    assert answers == reference


def test_killed_replica_changes_no_decision(world, auth, reference):
    url = world["urls"]["state1"]
    answers = [answer(ask(url, auth, w, "replica-kill")) for w in world["windows"][:7]]
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith("SERVE_REPLICA::state1#Ensemble")]
    assert len(replicas) == 1
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=True)
    wait_healthy(url)  # Serve's controller starts a new replica
    answers += [answer(ask(url, auth, w, "replica-kill")) for w in world["windows"][7:]]
    assert answers == reference


def test_restarted_app_continues_the_run(world, auth, reference):
    url = world["urls"]["state1"]
    answers = [answer(ask(url, auth, w, "app-restart")) for w in world["windows"][:8]]
    restart_app(world, "state1")
    answers += [answer(ask(url, auth, w, "app-restart")) for w in world["windows"][8:]]
    assert answers == reference
    # a repeat of the last bar gets the stored answer back (a loop retrying is not scored twice)
    assert answer(ask(url, auth, world["windows"][-1], "app-restart")) == reference[-1]


def test_halted_book_stays_halted_across_a_restart_and_no_request_moves_it(world, auth):
    url, w = world["urls"]["halts"], world["windows"]
    assert answer(ask(url, auth, w[0], "halt"))["risk"]["state"] == "ACTIVE"
    halted = answer(ask(url, auth, w[5], "halt", cash=70_000_000))  # the book lost 30 %: HALTED
    assert halted["risk"]["state"] == "HALTED" and sum(halted["targets"].values()) == 0
    # what could move it from outside: a stateless request with absurd cash, another universe,
    # a far-future date, another run's token
    stateless = requests.post(url, json={"as_of": w[6]["dates"][-1], "bars": w[6],
                                         "portfolio": {"cash": 10 ** 14}}, headers=auth(), timeout=60)
    assert stateless.status_code == 200 and stateless.json()["run_id"] is None
    other = {k: (v[:3] if k == "symbols" else [r[:3] for r in v] if k != "dates" else v) for k, v in w[6].items()}
    assert ask(url, auth, other, "halt").status_code == 409
    future = dict(w[6], dates=w[6]["dates"][:-1] + ["2099-01-02"])
    assert requests.post(url, json={"as_of": "2099-01-02", "bars": future, "run_id": "halt"},
                         headers=auth("halt"), timeout=60).status_code == 422
    assert requests.post(url, json={"as_of": w[6]["dates"][-1], "bars": w[6], "run_id": "halt"},
                         headers=auth("someone-else"), timeout=60).status_code == 403
    assert requests.post(url, json={"as_of": w[6]["dates"][-1], "bars": w[6], "run_id": "halt"},
                         headers=auth(), timeout=60).status_code == 403  # the service secret is stateless only
    restart_app(world, "halts")
    after = answer(ask(url, auth, w[10], "halt", cash=70_000_000))
    assert after["rebalance"] and after["risk"]["state"] == "HALTED" and sum(after["targets"].values()) == 0
