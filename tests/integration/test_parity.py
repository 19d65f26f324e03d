"""`trader check-parity`: the backtester and the real served loop trade the same orders.

One run over 62 bars of the shipped data with the default ensemble (regime-factor, technical,
equal-weight; RL members need a registry and are left out on both sides): the backtest in
process, and the loop through Serve over HTTP, the Execution actor and the PaperBroker."""
from urllib.parse import urlparse

import pytest

from cluster.commands.parity import register  # noqa: F401  (the command module imports cleanly)
from cluster.parity import ParityConfig, run_parity

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_backtest_and_served_loop_agree_on_every_target_and_order(decide_url, tmp_path):
    from cluster.trading_loop import deploy_decision_service
    from serving.champions import ServedAgents
    from strategies.registry import members_of

    members = list(members_of("ensemble"))
    port = urlparse(decide_url).port  # the session's Serve: one more app on its HTTP port
    url = deploy_decision_service(members, port, served=ServedAgents(agents=members), name="parity",
                                  route_prefix="/parity", state_path=tmp_path / "state.sqlite")
    # 7 symbols: a universe no other test uses (the shared AgentActors keep one agent per universe)
    report = run_parity(ParityConfig(start="2023-01-02", end="2023-03-31", n_symbols=7), url, tmp_path)
    print("\n".join(report.lines()))
    assert report.bars >= 60
    assert report.backtest_decisions >= 12 and report.backtest_orders > 10  # it really traded
    assert report.lines()[-1] == "differences: targets 0, orders 0"
    assert report.backtest_cash == report.served_cash
