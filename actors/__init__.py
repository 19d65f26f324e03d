"""Ray actors: MarketState (the feed), Agent (one strategy each), Execution (the trading loop)."""

NAMESPACE = "kis-ray-trader"
