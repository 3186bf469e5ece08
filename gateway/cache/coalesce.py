"""Single-flight: identical concurrent misses make one upstream call.

In one process, the first miss on a key leads and later ones wait on its future. With a shared
store (Redis) the leader also takes a short `SET NX PX` lock; a process that finds the key locked
polls the store for the leader's entry. A leader that fails, or whose answer may not be stored,
releases its followers to try on their own.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

POLL_S = 0.02


class Flight:
    def __init__(self, key: str, flights: "Flights"):
        self.key = key
        self._flights = flights
        self.future: asyncio.Future[Any | None] = asyncio.get_running_loop().create_future()

    def resolve(self, answer: Any | None) -> None:
        """The leader's answer for its followers (None: followers go upstream on their own)."""
        if not self.future.done():
            self.future.set_result(answer)

    def close(self) -> None:
        """The flight is over (its entry, if any, is in the store): new requests read the store."""
        if self._flights._local.get(self.key) is self:
            del self._flights._local[self.key]
            self._flights._unlock(self.key)


class Flights:
    def __init__(self, lock: Callable[[str, float], Awaitable[bool]], unlock: Callable[[str], Awaitable[None]],
                 locked: Callable[[str], Awaitable[bool]], get: Callable[[str], Awaitable[Any | None]],
                 lock_ms: float):
        self._local: dict[str, Flight] = {}
        self._lock, self._unlock_store, self._locked, self._get = lock, unlock, locked, get
        self.lock_ms = lock_ms
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
        if await self._lock(key, self.lock_ms):
            return flight, None
        # Another replica leads: wait for its entry, then hand it to our local followers too.
        found = await self._poll(key)
        flight.future.set_result(found)
        if self._local.get(key) is flight:
            del self._local[key]
        return None, found

    async def _poll(self, key: str) -> Any | None:
        deadline = time.monotonic() + self.lock_ms / 1000
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            value = await self._get(key)
            if value is not None:
                return value
            if not await self._locked(key):
                return await self._get(key)  # the leader finished: its entry, or nothing to share
        return None

    def _unlock(self, key: str) -> None:
        task = asyncio.ensure_future(self._unlock_store(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
