"""Per-provider concurrency limit with a bounded FIFO queue."""

from __future__ import annotations

import asyncio
from collections import deque


class LimitExceeded(Exception):
    def __init__(self, reason: str):  # "queue full" or "queue timeout"
        super().__init__(reason)
        self.reason = reason


class Limiter:
    """At most `max_concurrency` holders; up to `max_queue` waiters, served first come first served.

    A released slot is handed straight to the oldest waiter, so a newcomer never overtakes the queue.
    """

    def __init__(self, max_concurrency: int, max_queue: int, queue_timeout_s: float):
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """A slot if one is free now (and nobody is waiting for one), else False; never waits."""
        if self.in_flight < self.max_concurrency and not self._waiters:
            self.in_flight += 1
            return True
        return False

    async def acquire(self) -> None:
        if self.in_flight < self.max_concurrency and not self._waiters:
            self.in_flight += 1
            return
        if len(self._waiters) >= self.max_queue:
            raise LimitExceeded("queue full")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as we gave up: pass it on
            else:
                waiter.cancel()
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            if isinstance(exc, TimeoutError):
                raise LimitExceeded("queue timeout") from None
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to the waiter; in_flight is unchanged
                return
        self.in_flight -= 1
