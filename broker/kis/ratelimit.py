"""A token bucket per (environment, app key): callers block until a request may go out."""
from __future__ import annotations

import threading
import time


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: int = 1, clock=time.monotonic, sleep=time.sleep):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate_per_s}, {burst}")
        self.rate, self.burst = float(rate_per_s), int(burst)
        self._tokens = float(burst)
        self._clock, self._sleep = clock, sleep
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take one token, sleeping as long as needed."""
        while (wait := self._take()) > 0:
            self._sleep(wait)

    def try_acquire(self) -> bool:
        """Take one token if there is one now; never waits (alerts: over the rate is coalesced)."""
        return self._take() == 0

    def _take(self) -> float:
        """0 when a token was taken, else the seconds until one is due."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


_BUCKETS: dict[tuple[str, str, str], TokenBucket] = {}
_BUCKETS_LOCK = threading.Lock()


def bucket_for(env_name: str, rest_url: str, app_key: str, rate: float, burst: int) -> TokenBucket:
    """One bucket per environment + host + app key in this process (KIS counts per app key)."""
    key = (env_name, rest_url, app_key)
    with _BUCKETS_LOCK:
        b = _BUCKETS.get(key)
        if b is None or b.rate != rate or b.burst != burst:
            b = _BUCKETS[key] = TokenBucket(rate, burst)
        return b
