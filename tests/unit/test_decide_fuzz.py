"""Property-based fuzz of POST /v1/decide: ≥ 1,000 generated requests, no answer ≥ 500.

What runs (in process, no Ray): the real FastAPI stack the Serve ingress uses — `make_api`'s
guard (authentication, body limit), the request schema's validation, the sanitised 422 handler,
`DecisionService.decide` (state from a real SQLite DecisionStore, the core's combine, size and
hold, the answer's encoding) — with the technical agent computed in process instead of in its
AgentActor, and the Risk step called directly instead of through its deployment. What does not:
the Serve proxy and the actor hops (tests/integration/test_serving.py and
test_decision_state.py cover those over real HTTP).

Requests are drawn from the request schema (serving/schema.py: the shapes of DecideRequest,
Bars, Portfolio — with the bars, or by reference to an in-process market state over the shipped
data) and then broken: wrong types, NaN/±Infinity (as the JSON tokens Python's
parser accepts), zero/negative/huge numbers, ragged rows, odd symbols and run ids, dates out of
order or in the future, missing fields, wrong or missing tokens.
"""
import datetime as dt
import json
import math

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.market_state import MarketState
from market.data import load_panel
from serving.auth import RUN_ID, Secret, run_token
from serving.http import make_api, request_principal
from serving.schema import DecideRequest, DecideResponse
from serving.service import DecisionService, UnknownMarket
from serving.state import DecisionStore
from strategies.base import AgentAbstains, check_weights
from strategies.pipeline import DecisionPipeline
from strategies.registry import build

SECRET = Secret("fuzz-secret-0123456789abcdef")
SEEN = {"requests": 0, "codes": {}, "by_reference": 0}
MARKET_SYMBOLS = ["000660", "005930", "035420"]
MARKET_LAST = dt.date(2023, 6, 30)  # the market state has seen bars up to here, not after
LOOKBACK = DecisionPipeline().lookback([build("technical").lookback])  # what the service asks of its market


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from fastapi import Request

    pipeline = DecisionPipeline()
    store = DecisionStore(tmp_path_factory.mktemp("fuzz") / "state.sqlite")
    agent = build("technical")

    panel = load_panel(symbols=MARKET_SYMBOLS, start="2021-06-01", end="2023-12-28")
    market = MarketState(panel, panel.index_of(MARKET_LAST))

    async def resolve(name, as_of, universe):
        if name != "fuzz":
            raise UnknownMarket(f"no market state named {name!r} is running")
        window = market.window(as_of, universe, LOOKBACK)
        return window, window

    async def ask_members(window):
        try:
            return {"technical": {"targets": dict(zip(window.symbols, map(float, check_weights(
                agent.target_weights(window), len(window.symbols), "technical"))))}}
        except AgentAbstains as exc:
            return {"technical": {"abstained": str(exc)}}

    async def size(snap, account, combined, state):
        return pipeline.size(snap, account, combined, state)

    async def get(run_id):
        return store.get(run_id)

    async def put(run_id, version, state, answer):
        return store.put(run_id, version, state, answer)

    service = DecisionService(pipeline, ["technical"], ask_members, size, get, put, resolve)
    api = make_api(lambda: SECRET, max_body=256 * 1024)

    @api.post("/v1/decide", response_model=DecideResponse)
    async def decide(body: DecideRequest, request: Request) -> DecideResponse:
        return await service.decide(body, request_principal(request))

    with TestClient(api, raise_server_exceptions=False) as c:
        yield c
    store.close()


numbers = st.one_of(
    st.floats(min_value=1, max_value=1e6), st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-10 ** 30, max_value=10 ** 30), st.just(0), st.just(-1.0), st.none(),
    st.just(1e308), st.text(max_size=3), st.booleans())
symbols = st.one_of(st.sampled_from(["005930", "000660", "035420"]), st.text(max_size=20),
                    st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True), st.just("x" * 5000), st.just(""))
dates = st.one_of(st.dates().map(lambda d: d.isoformat()), st.just("2099-01-02"), st.text(max_size=12),
                  st.integers())


@st.composite
def requests_(draw):
    valid = draw(st.integers(0, 4)) < 2  # 2 in 5 draws follow the schema, the rest break it somewhere
    n_sym = draw(st.integers(1, 4))
    n_dates = draw(st.integers(1, 6))
    syms = (draw(st.lists(st.from_regex(r"[0-9]{6}", fullmatch=True), min_size=n_sym, max_size=n_sym, unique=True))
            if valid else draw(st.lists(symbols, min_size=n_sym, max_size=n_sym)))
    base = draw(st.dates(min_value=dt.date(2015, 1, 1),
                         max_value=dt.date(2024, 1, 1)))
    ds = [(base + dt.timedelta(days=i)).isoformat() for i in range(n_dates)]
    if not valid and draw(st.booleans()):
        ds = draw(st.lists(dates, min_size=n_dates, max_size=n_dates))

    def grid(well_formed):
        if well_formed:
            px = draw(st.floats(min_value=1000, max_value=100000))
            return [[px * (1 + 0.01 * ((i + j) % 3)) for j in range(n_sym)] for i in range(n_dates)]
        rows = draw(st.integers(0, n_dates + 1))
        return [draw(st.lists(numbers, min_size=0, max_size=n_sym + 1)) for _ in range(rows)]

    good = valid or draw(st.booleans())
    bars = {k: grid(good or draw(st.booleans())) for k in ("open", "high", "low", "close", "volume")}
    if good:
        bars["high"] = [[v * 1.02 for v in r] for r in bars["close"]]
        bars["low"] = [[v * 0.98 for v in r] for r in bars["close"]]
        bars["open"] = [list(r) for r in bars["close"]]
    body = {"as_of": ds[-1] if valid else draw(st.one_of(st.just(ds[-1]), dates)),
            "bars": {"dates": ds, "symbols": syms, **bars}}
    if draw(st.integers(0, 3)) == 0:   # by reference: the service reads the bars from its market state
        universe = (draw(st.lists(st.sampled_from(MARKET_SYMBOLS), min_size=1, max_size=3, unique=True))
                    if valid else draw(st.lists(symbols, min_size=0, max_size=4)))
        day = draw(st.dates(min_value=dt.date(2023, 1, 1), max_value=dt.date(2023, 9, 30)))
        body = {"as_of": day.isoformat() if valid else draw(st.one_of(st.just(day.isoformat()), dates)),
                "universe": universe, "market": "fuzz" if valid else draw(st.sampled_from(["fuzz", "other", ""]))}
        if not valid and draw(st.booleans()):
            body["bars"] = {"dates": ds, "symbols": syms, **bars}   # both forms at once
    if valid:
        body["portfolio"] = {"cash": draw(st.integers(0, 10 ** 12)),
                             "positions": {syms[0]: draw(st.integers(0, 1000))}}
    elif draw(st.booleans()):
        body["portfolio"] = {"cash": draw(numbers), "positions": draw(st.dictionaries(symbols, numbers, max_size=3))}
    run_id = draw(st.one_of(st.none(), st.sampled_from(["run-a", "run-b"]),
                            st.text(max_size=70) if not valid else st.none()))
    if run_id is not None:
        body["run_id"] = run_id
    if not valid:
        for key in draw(st.lists(st.sampled_from(["as_of", "bars", "universe", "market", "portfolio", "run_id"]),
                                 max_size=1)):
            body.pop(key, None)  # a missing field
    token = draw(st.sampled_from(["secret", "run"] if valid else ["secret", "run", "other-run", "wrong", "none"]))
    return body, token


def headers_for(token, body):
    run_id = body.get("run_id") if isinstance(body.get("run_id"), str) else None
    value = {"secret": SECRET.reveal(), "wrong": "not-the-token",
             "run": run_token(SECRET, run_id) if run_id and RUN_ID.match(run_id) else SECRET.reveal(),
             "other-run": run_token(SECRET, "someone-else")}.get(token)
    return {"content-type": "application/json", **({"Authorization": f"Bearer {value}"} if value else {})}


@pytest.mark.slow   # 1,100 requests, ≈ 14 s
@settings(max_examples=1100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(requests_())
def test_no_generated_request_gets_a_5xx(client, drawn):
    body, token = drawn
    data = json.dumps(body, allow_nan=True)  # NaN / Infinity as the tokens a hostile client sends
    resp = client.post("/v1/decide", content=data, headers=headers_for(token, body))
    SEEN["requests"] += 1
    SEEN["codes"][resp.status_code] = SEEN["codes"].get(resp.status_code, 0) + 1
    if "universe" in body and resp.status_code == 200:
        SEEN["by_reference"] += 1
    assert resp.status_code < 500, (resp.status_code, resp.text[:500], data[:500])
    assert resp.status_code in (200, 401, 403, 409, 422), resp.text[:300]
    out = resp.json()  # every answer is valid JSON (no NaN echoed)
    if resp.status_code == 200:
        w = np.array(list(out["targets"].values()))
        assert np.all(w >= 0) and w.sum() <= 1 + 1e-9
    elif resp.status_code == 422:
        assert "detail" in out and "nan" not in resp.text.lower().replace("nan_", "")


@pytest.mark.slow   # counts what the (slow) fuzz above sent
def test_the_fuzz_ran_enough_requests_of_every_kind():
    # runs after the fuzz in file order: at least 1,000 requests, and the mix reached the handler
    print(f"fuzz: {SEEN}")
    assert SEEN["requests"] >= 1000, SEEN
    assert SEEN["codes"].get(200, 0) >= 50 and SEEN["codes"].get(422, 0) >= 100, SEEN
    assert SEEN["codes"].get(401, 0) > 0 and SEEN["codes"].get(403, 0) + SEEN["codes"].get(409, 0) > 0, SEEN
    assert SEEN["by_reference"] >= 20, SEEN   # decisions by reference answered too


def test_oversized_body_is_422_naming_body(client):
    big = json.dumps({"as_of": "2023-01-02", "bars": {"dates": ["2023-01-02"], "symbols": ["x" * 300_000]}})
    resp = client.post("/v1/decide", content=big,
                       headers={"content-type": "application/json", "Authorization": f"Bearer {SECRET.reveal()}"})
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["body"]


def test_nan_and_infinity_are_422_and_not_echoed(client):
    for bad in ("NaN", "Infinity", "-Infinity", "0", "1e400"):
        text = ('{"as_of":"2023-01-03","bars":{"dates":["2023-01-02","2023-01-03"],"symbols":["005930"],'
                f'"open":[[1],[1]],"high":[[1],[1]],"low":[[1],[1]],"close":[[1],[{bad}]],"volume":[[1],[1]]}}}}')
        resp = client.post("/v1/decide", content=text, headers={"content-type": "application/json",
                                                                "Authorization": f"Bearer {SECRET.reveal()}"})
        assert resp.status_code == 422, (bad, resp.text)
        assert "close" in resp.text and not math.isnan(len(resp.text))
        assert "Infinity" not in resp.text and "NaN" not in resp.text


def _post(client, body):
    return client.post("/v1/decide", json=body, headers={"Authorization": f"Bearer {SECRET.reveal()}"})


def test_a_decision_by_reference_equals_the_decision_on_the_same_bars(client):
    panel = load_panel(symbols=MARKET_SYMBOLS, start="2021-06-01", end="2023-12-28")
    invested = 0
    for day in panel.between("2023-03-02", "2023-06-30").dates[::10]:
        day = dt.date.fromisoformat(str(day))
        by_value = _post(client, {"as_of": day.isoformat(), "bars": panel.upto(day).tail(LOOKBACK).to_dict()})
        by_reference = _post(client, {"as_of": day.isoformat(), "universe": MARKET_SYMBOLS, "market": "fuzz"})
        assert by_value.status_code == by_reference.status_code == 200, (by_value.text, by_reference.text)
        assert by_reference.json() == by_value.json(), day
        invested += sum(by_reference.json()["targets"].values()) > 0
    assert invested > 0   # some of the compared decisions hold stocks


def test_a_decision_by_reference_never_sees_a_bar_the_market_has_not_seen(client):
    # the market state has bars up to 2023-06-30 (and holds later rows, as a replay does)
    late = _post(client, {"as_of": "2023-07-03", "universe": MARKET_SYMBOLS, "market": "fuzz"})
    assert late.status_code == 422 and late.json()["field"] == "universe", late.text
    assert "after the market's last bar 2023-06-30" in late.json()["detail"]


def test_a_bad_reference_is_422_naming_the_field(client):
    bars = load_panel(symbols=MARKET_SYMBOLS, start="2023-06-01", end="2023-06-29").to_dict()
    cases = [({"universe": ["999999"], "market": "fuzz"}, "universe", "not in the panel"),
             ({"universe": MARKET_SYMBOLS, "market": "nobody"}, "market", "no market state named"),
             ({"universe": MARKET_SYMBOLS}, None, "names the market state"),
             ({"universe": MARKET_SYMBOLS, "market": "fuzz", "bars": bars}, None, "not both"),
             ({"bars": bars, "market": "fuzz"}, None, "needs none")]
    for extra, field, words in cases:
        resp = _post(client, {"as_of": "2023-06-29", **extra})
        assert resp.status_code == 422, (extra, resp.text)
        assert words in resp.text, (extra, resp.text)
        if field:
            assert resp.json()["field"] == field
