"""Recent latency per target: an exponentially weighted moving average of the time to first byte."""

from __future__ import annotations

import time
from typing import Callable, Iterable


class Latency:
    """`alpha` weighs the newest sample; a target not heard from for `stale_s` counts as unknown
    again, so the `latency` strategy explores it once more instead of avoiding it forever."""

    def __init__(self, alpha: float = 0.3, stale_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.alpha = alpha
        self.stale_s = stale_s
        self.clock = clock
        self.ewma: dict[str, float] = {}
        self.seen_at: dict[str, float] = {}

    def observe(self, name: str, seconds: float) -> None:
        old = self.ewma.get(name)
        self.ewma[name] = seconds if old is None else old + self.alpha * (seconds - old)
        self.seen_at[name] = self.clock()

    def get(self, name: str) -> float | None:
        """The current estimate in seconds, or None when unknown or stale."""
        value = self.ewma.get(name)
        if value is None or self.clock() - self.seen_at[name] > self.stale_s:
            return None
        return value

    def adopt(self, previous: "Latency", names: Iterable[str]) -> None:
        for name in names:
            if name in previous.ewma:
                self.ewma[name] = previous.ewma[name]
                self.seen_at[name] = previous.seen_at[name]
