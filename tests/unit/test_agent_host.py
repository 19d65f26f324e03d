"""The agent host keeps stateful agents apart per universe and never steps one twice for a bar."""
import pytest

from actors.agent import AgentHost
from market.data import load_panel


@pytest.mark.slow  # > 2 s on a busy 2-core machine: not in the quick loop (README)
def test_universes_do_not_share_agent_state_and_replays_restart_cleanly():
    host = AgentHost("factor")
    big = load_panel(symbols=["005930", "000660", "035420", "005380", "051910", "006400", "035720", "068270"],
                     start="2019-01-01", end="2023-06-30")
    small = big.select(["005930", "000660", "035420", "005380", "051910"])
    n = host.lookback()
    first = host.act(small.tail(n + 5).rows(0, n).to_dict())
    assert set(first) == set(small.symbols)
    answer_big = host.act(big.tail(n).to_dict())  # another universe: its own agent, no shape clash
    assert set(answer_big) == set(big.symbols)
    again = host.act(big.tail(n).to_dict())  # same bar asked twice: the same answer, agent not stepped
    assert again == answer_big
    earlier = host.act(small.tail(n + 5).rows(0, n).to_dict())  # time went back: a fresh agent
    assert earlier == first
