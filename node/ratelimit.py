"""Token-bucket rate limiting, keyed by client, with time passed in.

Pure logic so it can be tested without clocks; callers pass ``now`` from
``trio.current_time()`` or ``time.monotonic()``.  The table of buckets is
bounded: when full, the least recently refilled buckets are forgotten (a
forgotten client starts again with a full bucket, which is the safe side of
forgetting).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, *, rate: float, burst: float, max_clients: int = 10_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, client: str, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``client``'s bucket; False when it is empty."""
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        self._buckets[client] = bucket
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return True
        return False

    def retry_after(self, client: str, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens will be available to ``client``."""
        bucket = self._buckets.get(client)
        if bucket is None:
            return 0.0
        return max(0.0, (cost - bucket.tokens) / self.rate)
