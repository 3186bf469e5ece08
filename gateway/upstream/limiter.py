"""Per-provider concurrency limits with a bounded FIFO queue: counted in this process (`Limiter`),
or across every replica and worker in Redis (`GlobalLimiter`, with `state.backend: redis`).

Both hand out `Slot`s: `await limiter.acquire()` (waits in the queue) or `await
limiter.try_acquire()` (a free slot now, else None); `slot.release()` gives it back, exactly once
however often it is called.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
import uuid
from collections import deque

from ..errors import GatewayError, limits_unavailable
from .leases import Leases

log = logging.getLogger("gateway.limiter")

LOG_EVERY_S = 10.0


class LimitExceeded(Exception):
    def __init__(self, reason: str):  # "queue full" or "queue timeout"
        super().__init__(reason)
        self.reason = reason


class Slot:
    __slots__ = ("_limiter", "id", "shared")

    def __init__(self, limiter: "Limiter", slot_id: str = "", shared: bool = False):
        self._limiter: Limiter | None = limiter
        self.id = slot_id
        self.shared = shared      # counted in Redis (else only in this process)

    def release(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter._release(self)


class Limiter:
    """At most `max_concurrency` holders in this process; up to `max_queue` waiters, served first
    come first served. A released slot is handed straight to the oldest waiter, so a newcomer never
    overtakes the queue."""

    def __init__(self, max_concurrency: int, max_queue: int, queue_timeout_s: float):
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[Slot]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def try_acquire(self) -> Slot | None:
        """A slot if one is free now (and nobody is waiting for one), else None; never waits."""
        if self.in_flight < self.max_concurrency and not self._waiters:
            self.in_flight += 1
            return Slot(self)
        return None

    async def acquire(self) -> Slot:
        if self.in_flight < self.max_concurrency and not self._waiters:
            self.in_flight += 1
            return Slot(self)
        return await self._wait()

    async def _wait(self) -> Slot:
        if len(self._waiters) >= self.max_queue:
            raise LimitExceeded("queue full")
        waiter: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                waiter.result().release()  # the slot was handed over just as we gave up: pass it on
            else:
                waiter.cancel()
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            if isinstance(exc, TimeoutError):
                raise LimitExceeded("queue timeout") from None
            raise

    def _hand_over(self, slot: Slot) -> bool:
        """Give a free slot to the oldest waiter still waiting; False when there is none."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return True
        return False

    def _release(self, slot: Slot) -> None:
        if not self._hand_over(Slot(self)):   # the slot moves to the waiter; in_flight is unchanged
            self.in_flight -= 1

    async def close(self) -> None:
        pass


_PROCESS = f"{uuid.uuid4().hex[:12]}:{os.getpid()}"   # names this process's slots in Redis


class GlobalLimiter(Limiter):
    """`max_concurrency` across every process on one Redis: each slot a lease (see leases.py).

    Waiting stays in this process, FIFO: one task takes slots for the queue's head, woken when a
    slot frees anywhere (the Redis subscription) or when the earliest lease lapses. `in_flight`
    and `queued` are this process's share. When Redis fails, `on_error: allow` falls back to the
    limit counted in this process alone, `deny` refuses with 503 `limits_unavailable`.
    """

    def __init__(self, provider: str, max_concurrency: int, max_queue: int, queue_timeout_s: float,
                 leases: Leases, on_error: str):
        super().__init__(max_concurrency, max_queue, queue_timeout_s)
        self.provider = provider
        self.leases = leases
        self.on_error = on_error
        self.errors = 0
        self._ids = itertools.count(1)
        self._held: dict[str, Slot] = {}           # shared slots held here, renewed while held
        self._wake = asyncio.Event()
        self._hint_s = 1.0                         # from the last refusal: when the earliest lease lapses
        self._pump: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._logged_at = -math.inf
        leases.watch(provider, self._wake.set)

    async def try_acquire(self) -> Slot | None:
        if self._waiters:
            return None
        return await self._take()

    async def acquire(self) -> Slot:
        if not self._waiters:
            slot = await self._take()
            if slot is not None:
                return slot
        return await self._wait()

    async def _wait(self) -> Slot:
        if len(self._waiters) < self.max_queue and (self._pump is None or self._pump.done()):
            self._pump = asyncio.get_running_loop().create_task(self._serve_queue())
        return await super()._wait()

    async def _take(self) -> Slot | None:
        """One round trip: a slot now, or None (the limit is reached everywhere)."""
        slot_id = f"{_PROCESS}:{next(self._ids)}"
        try:
            async with asyncio.timeout(self.leases.timeout_s):
                wait_ms = await self.leases.take(self.provider, slot_id, self.max_concurrency)
        except Exception as exc:   # Redis down, slow or refusing
            self._failed(exc)
            self._hint_s = 1.0   # the queue tries Redis again in a second, or when a slot of ours frees
            if self.in_flight < self.max_concurrency:   # allow: this process's own count
                self.in_flight += 1
                return Slot(self)
            return None
        if wait_ms:
            self._hint_s = wait_ms / 1000
            return None
        self.in_flight += 1
        slot = self._held[slot_id] = Slot(self, slot_id, shared=True)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew())
        return slot

    async def _serve_queue(self) -> None:
        while self._waiters:
            if self._waiters[0].done():   # gave up waiting
                self._waiters.popleft()
                continue
            self._wake.clear()   # before the round trip: a slot freed during it wakes the next try
            try:
                slot = await self._take()
            except GatewayError as exc:   # deny: every waiter gets the 503
                while self._waiters:
                    waiter = self._waiters.popleft()
                    if not waiter.done():
                        waiter.set_exception(exc)
                return
            if slot is not None:
                if not self._hand_over(slot):
                    slot.release()
                continue
            # Woken by a slot freed anywhere; else when the earliest lease lapses (a dead holder's),
            # and every second while the subscription is down.
            delay = self._hint_s if self.leases.subscribed else min(self._hint_s, 1.0)
            try:
                async with asyncio.timeout(max(delay, 0.001)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _release(self, slot: Slot) -> None:
        self.in_flight -= 1
        if slot.shared:
            del self._held[slot.id]
            self._spawn(self._give(slot.id))
        else:
            self._wake.set()   # a slot of the local fallback: the queue may take it

    async def _give(self, slot_id: str) -> None:
        try:
            async with asyncio.timeout(max(self.leases.timeout_s, 1.0)):
                await self.leases.give(self.provider, slot_id)
        except Exception as exc:   # its lease lapses on its own
            self._failed(exc, refusing=False)
        self._wake.set()

    async def _renew(self) -> None:
        every = self.leases.lease_ms / 3000
        while self._held:
            await asyncio.sleep(every)
            if not self._held:
                return
            try:
                async with asyncio.timeout(max(self.leases.timeout_s, 1.0)):
                    await self.leases.renew(self.provider, list(self._held))
            except Exception as exc:
                self._failed(exc, refusing=False)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _failed(self, exc: BaseException, refusing: bool = True) -> None:
        self.errors += 1
        self.leases.errors += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning("state backend redis failed for provider %s's slots (%s: %s); %s", self.provider,
                        type(exc).__name__, exc, "counting them in this process for now"
                        if self.on_error == "allow" else "refusing requests for now")
        if refusing and self.on_error == "deny":
            raise limits_unavailable() from None

    async def close(self) -> None:
        """Stop waking and renewing; give back what is still held (a shutdown mid-request)."""
        self.leases.unwatch(self.provider, self._wake.set)
        for slot in list(self._held.values()):
            slot.release()
        for task in (self._pump, self._renewer):
            if task is not None:
                task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
