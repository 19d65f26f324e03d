"""The one set of defaults for the per-bar decision and the account it trades.

Every caller (the backtester, the Serve deployments, the trading loop, the settings, the RL
environment's starting cash) reads these names instead of repeating the numbers, so a backtest
and the served loop start from the same account, see the same history and size with the same caps.
"""
from __future__ import annotations

STARTING_CASH = 100_000_000  # KRW
MAX_POSITION = 0.20          # cap per symbol, fraction of equity
MAX_GROSS = 1.0              # cap on the sum of weights (no leverage)
CVAR_BUDGET = 0.03           # one-day CVaR (at RiskModel.budget_alpha) budget, fraction of equity
# the risk layer (strategies/risk.py): "overlay" (RiskOverlay: keeps the combiner's ranking, scales
# exposure to a volatility target with a floor, drawdown scaling, caps) or "erc" (RiskModel: equal
# risk contribution over the held names, CVaR budget, hard drawdown stops). The overlay beat ERC on
# every validation window of reports/strategies.md (issue 15); ERC stays as the option.
RISK_LAYER = "overlay"
VOL_TARGET = 0.15            # annualised volatility the overlay scales gross exposure to
EXPOSURE_FLOOR = 0.5         # least gross the overlay's volatility step leaves
RISK_WINDOW = 250            # daily returns the risk model sizes on (≈ one year)
REBALANCE_EVERY = 5          # bars between decisions; in between the book is held (no orders)
REBALANCE_BAND = 0.01        # orders smaller than this fraction of equity are skipped (churn costs)
MIN_LOOKBACK = 61            # bars a snapshot holds at least (raised to what the agents need)
# portfolio construction between the combination and the risk layer (strategies/construction.py):
# "combined" (the combined weights as they are) or "tilted-ew" (TiltedEqualWeight: every tradable
# name, equal weight tilted by the combined score's rank by TILT, capped at TILT_MAX_WEIGHT, small
# moves under TILT_BAND skipped). Chosen on validation windows only: reports/strategies.md (issue 15).
CONSTRUCTION = "combined"
TILT = 1.0
TILT_MAX_WEIGHT = 0.05
TILT_BAND = 0.0
