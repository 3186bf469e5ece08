"""The shared exact cache in Redis: entries with a TTL, and the short locks that coalesce misses
across replicas. Redis being down, slow or odd is a miss, never an error: every call is bounded by
`timeout_ms`. Only Redis being unreachable (connection refused or reset, a call timing out) skips
it for `cooldown_s`; a command Redis refuses (a value it will not take, out of memory, a read-only
replica) is that request's miss and error, and Redis stays on for everyone else."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable

import orjson
import redis.asyncio as redis
from redis.exceptions import DataError, MaxConnectionsError, ResponseError

from .entry import Entry

log = logging.getLogger("gateway.cache")

LOCK_PREFIX = "gw:lock:"

# A lock is deleted or extended only by the flight that took it (its token): a leader whose lock
# expired must not free, or keep, the lock another replica has taken since.
UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"

# Failures of this call, not of Redis: Redis answered and refused the command, the arguments
# could not be sent, or this process has every pooled connection in use.
REFUSED = (ResponseError, DataError, MaxConnectionsError, ValueError)

SKIPPED = object()  # `_call`'s default when Redis was not asked or did not answer

# Keys per MGET, or per pipeline of SETs: a batch of 2,048 embeddings is a few commands, sent at
# once, each bounded by the timeout on its own (one huge reply must not look like Redis being down).
BATCH_KEYS = 256


class RedisStore:
    name = "redis"
    shared = True  # other replicas see the entries and the locks

    def __init__(self, url: str, timeout_ms: float, cooldown_s: float):
        timeout = timeout_ms / 1000
        self.timeout = timeout
        self.cooldown_s = cooldown_s
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False,
            health_check_interval=0, max_connections=256,
        )
        self._unlock = self.client.register_script(UNLOCK)
        self._renew = self.client.register_script(RENEW)
        self.errors = 0
        self._down_until = 0.0
        self._last_log = {"down": 0.0, "refused": 0.0}

    async def _call(self, op: Awaitable[Any], default: Any, always: bool = False) -> Any:
        """`op`'s result, or `default` when Redis is skipped (the cooldown), unreachable or refuses.
        `always`: made even during the cooldown (an unlock: a lock left behind stalls every
        identical request on every replica until it expires)."""
        if not always and self._down_until > time.monotonic():
            op.close()  # type: ignore[attr-defined]  # never awaited: skip the call entirely
            return default
        try:
            async with asyncio.timeout(self.timeout):
                return await op
        except REFUSED as exc:
            self.errors += 1
            self._log("refused", "redis cache refused a command (%s: %s); that request is a miss", exc)
            return default
        except (redis.RedisError, OSError, asyncio.TimeoutError) as exc:
            self.errors += 1
            self._down_until = time.monotonic() + self.cooldown_s
            self._log("down", f"redis cache unavailable (%s: %s); serving misses for {self.cooldown_s:g}s", exc)
            return default

    def _log(self, kind: str, message: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_log[kind] > 10:  # at most once per 10 s per kind
            self._last_log[kind] = now
            log.warning(message, type(exc).__name__, exc)

    def pack(self, entry: Entry) -> bytes:
        # Entry.to_dict's JSON, around the completion's bytes as the upstream sent them (a lead
        # that has them is not serialised again).
        return b'{"model":' + orjson.dumps(entry.model) + b',"completion":' + entry.body + b"}"

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

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        chunks = [keys[i:i + BATCH_KEYS] for i in range(0, len(keys), BATCH_KEYS)]
        if len(chunks) == 1:
            replies = [await self._call(self.client.mget(chunks[0]), None)]
        else:
            replies = await asyncio.gather(*(self._call(self.client.mget(chunk), None) for chunk in chunks))
        values: list[bytes | None] = []
        for chunk, reply in zip(chunks, replies):
            if isinstance(reply, list) and len(reply) == len(chunk):
                values.extend(v if isinstance(v, bytes) else None for v in reply)
            else:  # skipped, failed or odd: every key of the chunk is a miss
                values.extend([None] * len(chunk))
        return values

    async def set_many(self, items: list[tuple[str, bytes]], ttl_s: float) -> None:
        px = max(1, int(ttl_s * 1000))
        calls = []
        for i in range(0, len(items), BATCH_KEYS):
            pipe = self.client.pipeline(transaction=False)
            for key, value in items[i:i + BATCH_KEYS]:
                pipe.set(key, value, px=px)
            calls.append(self._call(pipe.execute(), None))
        await asyncio.gather(*calls)

    async def lock(self, key: str, token: str, ttl_ms: float) -> bool | None:
        """True: this flight now holds the key's lock (and must `unlock` it); False: another
        holds it; None: Redis cannot be asked now (everyone leads, without a lock)."""
        got = await self._call(self.client.set(LOCK_PREFIX + key, token, nx=True, px=int(ttl_ms)), SKIPPED)
        return None if got is SKIPPED else bool(got)

    async def renew(self, key: str, token: str, ttl_ms: float) -> bool | None:
        """Extend this flight's lock. False: it is gone (expired, or Redis restarted empty);
        None: Redis cannot be asked now."""
        got = await self._call(self._renew(keys=[LOCK_PREFIX + key], args=[token, int(ttl_ms)]), SKIPPED)
        return None if got is SKIPPED else bool(got)

    async def unlock(self, key: str, token: str) -> None:
        await self._call(self._unlock(keys=[LOCK_PREFIX + key], args=[token]), None, always=True)

    async def locked(self, key: str) -> bool:
        return bool(await self._call(self.client.exists(LOCK_PREFIX + key), 0))

    async def count(self) -> int | None:
        return await self._call(self.client.dbsize(), None)

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except Exception:  # closing a client whose server is gone must not fail shutdown
            pass
