"""The decision endpoint cannot be steered: no decision without the bearer token, and hostile
input gets 422 naming the field, never a 500 (real Serve over HTTP). That no request moves a run's
state is tests/integration/test_decision_state.py's part."""
from __future__ import annotations

import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market.data import load_panel
from serving.auth import auth_headers

pytestmark = pytest.mark.ray

SYMBOLS = ["005930", "000660", "035420"]


@pytest.fixture(scope="module")
def body(decide_url):
    need = requests.get(decide_url.replace("/v1/decide", "/healthz"), timeout=60).json()["lookback"]
    snap = load_panel(symbols=SYMBOLS, start="2019-01-01", end="2023-06-30").tail(need).to_dict()
    return {"as_of": snap["dates"][-1], "bars": snap, "portfolio": {"cash": 100_000_000, "positions": {}}}


def _post(url, body, token=True, **kw):
    headers = {"content-type": "application/json", **(auth_headers() if token else {})}
    data = body if isinstance(body, (bytes, str)) else json.dumps(body, allow_nan=True)
    return requests.post(url, data=data, headers=headers, timeout=120, **kw)


def test_no_token_no_decision(decide_url, body):
    assert _post(decide_url, body, token=False).status_code == 401
    r = requests.post(decide_url, json=body, headers={"authorization": "Bearer not-the-token"}, timeout=60)
    assert r.status_code == 401 and "not-the-token" not in r.text


def _with_bars(body, field, value, row=-1, col=0):
    bars = {k: [list(r) for r in v] if k in ("open", "high", "low", "close", "volume") else list(v)
            for k, v in body["bars"].items()}
    bars[field][row][col] = value
    return {**body, "bars": bars}


@pytest.mark.parametrize("make,field", [
    (lambda b: {**b, "portfolio": {"cash": 10 ** 30, "positions": {}}}, "cash"),
    (lambda b: {**b, "portfolio": {"cash": 1, "positions": {"005930": 10 ** 20}}}, "positions"),
    (lambda b: _with_bars(b, "close", float("inf")), "close"),
    (lambda b: _with_bars(b, "close", float("nan")), "close"),
    (lambda b: _with_bars(b, "open", 0.0, row=0), "open"),
    (lambda b: _with_bars(b, "high", 1.0), "high < low"),
    (lambda b: {**b, "as_of": "2099-12-31", "bars": {**b["bars"], "dates": b["bars"]["dates"][:-1] + ["2099-12-31"]}},
     "in the future"),
    (lambda b: {**b, "bars": {**b["bars"], "symbols": ["X" * 1_000_000, "000660", "035420"]}}, "symbols"),
    (lambda b: {**b, "bars": {**b["bars"], "symbols": []}}, "symbols"),
    (lambda b: {**b, "run_id": "../../etc"}, "run_id"),
])
def test_hostile_input_is_422_naming_the_field(decide_url, body, make, field):
    r = _post(decide_url, make(body))
    assert r.status_code == 422, r.text[:500]
    assert field in r.text[:5000]


def test_a_huge_body_is_refused_before_it_is_read(decide_url):
    r = _post(decide_url, b"{" + b" " * (65 * 1024 * 1024) + b"}")
    assert r.status_code == 422 and "larger than" in r.text


JSON = st.recursive(st.none() | st.booleans() | st.integers(min_value=-10 ** 40, max_value=10 ** 40)
                    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
FIELDS = ["as_of", "bars", "portfolio", "run_id", "bars.dates", "bars.symbols", "bars.close", "bars.open",
          "bars.high", "bars.low", "bars.volume", "portfolio.cash", "portfolio.positions", "bars.close.0.0"]


@settings(max_examples=1000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=JSON, drop=st.booleans())
def test_fuzzed_requests_never_get_a_server_error(decide_url, body, field, value, drop):
    """1,000 requests, each a valid body with one field replaced by arbitrary JSON (NaN, ±Infinity,
    40-digit integers, nested junk) or removed: every answer is 200, 401 or 422, never >= 500."""
    doc = json.loads(json.dumps(body))
    node, *path = field.split(".")
    parent, key = doc, node
    for part in path:
        parent = parent[key] if not isinstance(parent, list) else parent[int(key)]
        key = part if not isinstance(parent, list) else int(part)
    if drop and isinstance(parent, dict):
        parent.pop(key, None)
    else:
        parent[key] = value
    r = _post(decide_url, doc)
    assert r.status_code < 500, (field, value, r.status_code, r.text[:300])
