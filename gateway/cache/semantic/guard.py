"""Failing open: a backend that failed is skipped for a cooldown, and its failures are logged once
per interval rather than once per request (a down Qdrant under load would otherwise flood the log)."""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger("gateway.cache.semantic")


class Guard:
    def __init__(self, name: str, cooldown_s: float, log_interval_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.cooldown_s = cooldown_s
        self.log_interval_s = log_interval_s
        self.clock = clock
        self.failures = 0
        self._skip_until = 0.0
        self._next_log = 0.0
        self._unlogged = 0
        self._failing = False

    def available(self) -> bool:
        """False while the backend is cooling down after a failure."""
        return self.clock() >= self._skip_until

    def failed(self, error: BaseException | str) -> None:
        now = self.clock()
        self.failures += 1
        self._failing = True
        self._skip_until = now + self.cooldown_s
        if now >= self._next_log:
            more = f" ({self._unlogged} more since the last message)" if self._unlogged else ""
            log.warning("semantic cache: %s failed, skipping it for %gs: %s%s",
                        self.name, self.cooldown_s, error or type(error).__name__, more)
            self._next_log = now + self.log_interval_s
            self._unlogged = 0
        else:
            self._unlogged += 1

    def succeeded(self) -> None:
        if self._failing:
            self._failing = False
            log.info("semantic cache: %s is answering again", self.name)
