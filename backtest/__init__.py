"""Research: portfolio accounting over history, metrics, walk-forward splits, reports (no Ray)."""
