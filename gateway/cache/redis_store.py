"""The shared exact cache in Redis: entries with a TTL, and the short locks that coalesce misses
across replicas. Redis being down, slow or odd is a miss, never an error: every call is bounded by
`timeout_ms`, and after a failure Redis is skipped for `cooldown_s` instead of on every request."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable

import orjson
import redis.asyncio as redis

from .entry import Entry

log = logging.getLogger("gateway.cache")

LOCK_PREFIX = "gw:lock:"


class RedisStore:
    name = "redis"

    def __init__(self, url: str, timeout_ms: float, cooldown_s: float):
        timeout = timeout_ms / 1000
        self.timeout = timeout
        self.cooldown_s = cooldown_s
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False,
            health_check_interval=0, max_connections=256,
        )
        self.errors = 0
        self._down_until = 0.0
        self._last_log = 0.0

    async def _call(self, op: Awaitable[Any], default: Any) -> Any:
        if self._down_until > time.monotonic():
            op.close()  # never awaited: skip the call entirely during the cooldown
            return default
        try:
            async with asyncio.timeout(self.timeout):
                return await op
        except (redis.RedisError, OSError, asyncio.TimeoutError, ValueError) as exc:
            self.errors += 1
            now = time.monotonic()
            self._down_until = now + self.cooldown_s
            if now - self._last_log > 10:
                self._last_log = now
                log.warning("redis cache unavailable (%s: %s); serving misses for %.0fs",
                            type(exc).__name__, exc, self.cooldown_s)
            return default

    def pack(self, entry: Entry) -> bytes:
        return orjson.dumps(entry.to_dict())

    def unpack(self, value: bytes) -> Entry | None:
        try:
            entry = Entry.from_dict(orjson.loads(value))
        except orjson.JSONDecodeError:
            entry = None
        if entry is None:
            self.errors += 1  # garbage in the store is a miss
        return entry

    async def warm(self) -> None:
        """Open the first connection at startup rather than inside the first request's timeout."""
        await self._call(self.client.ping(), None)

    async def get(self, key: str) -> bytes | None:
        value = await self._call(self.client.get(key), None)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._call(self.client.set(key, value, px=max(1, int(ttl_s * 1000))), None)

    async def lock(self, key: str, ttl_ms: float) -> bool:
        """True if this replica now leads the key (or Redis is unavailable: then everyone leads)."""
        got = await self._call(self.client.set(LOCK_PREFIX + key, b"1", nx=True, px=int(ttl_ms)), "down")
        return got == "down" or bool(got)

    async def unlock(self, key: str) -> None:
        await self._call(self.client.delete(LOCK_PREFIX + key), None)

    async def locked(self, key: str) -> bool:
        return bool(await self._call(self.client.exists(LOCK_PREFIX + key), 0))

    async def count(self) -> int | None:
        return await self._call(self.client.dbsize(), None)

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except Exception:  # closing a client whose server is gone must not fail shutdown
            pass
