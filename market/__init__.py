"""Market data, trading calendar and KRX rules (plain Python, no Ray)."""
