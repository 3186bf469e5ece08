"""Single-flight: identical concurrent misses make one upstream call.

In one process, the first miss on a key leads and later ones wait on its future. With a shared
store (Redis) the leader also takes a lock that expires after a short lease and renews it every
third of the lease while its call runs; a process that finds the key locked polls the store for
the leader's entry while the lock lives. A leader that fails, or whose answer may not be stored,
releases its followers to try on their own; a leader that is gone (crashed, or lost Redis before
it could unlock) frees them when its lease runs out, not after the longest call it was allowed.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any, Awaitable, Callable

from .entry import Store

POLL_S = 0.02


class Flight:
    __slots__ = ("key", "future", "token", "_flights", "_renewal")

    def __init__(self, key: str, flights: "Flights"):
        self.key = key
        self._flights = flights
        self.future: asyncio.Future[Any | None] = asyncio.get_running_loop().create_future()
        self.token: str | None = None  # set while this flight holds the shared lock
        self._renewal: asyncio.Task[None] | None = None

    def resolve(self, answer: Any | None) -> None:
        """The leader's answer for its followers (None: followers go upstream on their own)."""
        if not self.future.done():
            self.future.set_result(answer)

    def close(self) -> None:
        """The flight is over (its entry, if any, is in the store): new requests read the store."""
        if self._flights._local.get(self.key) is self:
            del self._flights._local[self.key]
        self._flights._release(self)


class Flights:
    def __init__(self, store: Store, get: Callable[[str], Awaitable[Any | None]], lock_ms: float,
                 lease_ms: float):
        self._local: dict[str, Flight] = {}
        self._store = store if store.shared else None  # one process: the local flights are enough
        self._get = get
        self.lock_ms = lock_ms
        self.lease_ms = lease_ms
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._local)

    async def join(self, key: str) -> tuple[Flight | None, Any | None]:
        """(flight, None) when this request leads and must `resolve` and `close` the flight;
        (None, answer) when another request answered for us; (None, None) to go on alone."""
        flight = self._local.get(key)
        if flight is not None:
            try:
                return None, await asyncio.wait_for(asyncio.shield(flight.future), self.lock_ms / 1000)
            except asyncio.TimeoutError:
                return None, None
        flight = Flight(key, self)
        self._local[key] = flight
        store = self._store
        if store is None:
            return flight, None
        token = secrets.token_hex(8)
        got = await store.lock(key, token, self.lease_ms)
        if got is None:  # Redis cannot be asked: lead without a lock
            return flight, None
        if got:
            flight.token = token
            flight._renewal = self._spawn(self._renew(flight, token))
            return flight, None
        # Another replica leads: wait for its entry, then hand it to our local followers too.
        found = await self._poll(key)
        flight.future.set_result(found)
        if self._local.get(key) is flight:
            del self._local[key]
        return None, found

    async def _poll(self, key: str) -> Any | None:
        """The entry of the replica that holds the key's lock, polled while its lock lives (it
        renews it while its call runs), for at most `lock_ms`."""
        deadline = time.monotonic() + self.lock_ms / 1000
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            value = await self._get(key)
            if value is not None:
                return value
            if not await self._store.locked(key):  # type: ignore[union-attr]
                return await self._get(key)  # the leader finished: its entry, or nothing to share
        return None

    async def _renew(self, flight: Flight, token: str) -> None:
        """Keep a live leader's lock, every third of its lease, for at most `lock_ms` in all."""
        every = self.lease_ms / 3000
        until = time.monotonic() + self.lock_ms / 1000
        while time.monotonic() + every < until:
            await asyncio.sleep(every)
            if await self._store.renew(flight.key, token, self.lease_ms) is False:  # type: ignore[union-attr]
                return  # the lock is gone (it expired, or Redis restarted empty): nothing to keep

    def _release(self, flight: Flight) -> None:
        """Stop renewing the flight's lock and delete it; the unlock is made even while Redis is
        skipped after a failure (see RedisStore), and a lock it cannot delete expires in a lease."""
        if flight._renewal is not None:
            flight._renewal.cancel()
            flight._renewal = None
        token, flight.token = flight.token, None
        if token is not None and self._store is not None:
            self._spawn(self._store.unlock(flight.key, token))

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
