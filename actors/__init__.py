"""Ray actors: MarketState (the feed), Agent (one strategy each), Execution (the trading loop) and
BrokerGateway (the one KIS session per app key that the live feed and the execution loop share)."""

NAMESPACE = "kis-ray-trader"
