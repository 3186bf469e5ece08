"""Concurrency slots shared by every replica and worker: leases in Redis.

A provider's slots are one sorted set, `gw:slots:<provider>`: a member per slot held, scored by
when its lease lapses (the Redis server's clock, so replicas' clocks never matter). Taking a slot
is one script: drop lapsed leases, then add one if fewer than the limit are held; when none is
free it answers how long until the earliest lease lapses. Giving one back is one script that also
publishes on `gw:slots:<provider>:freed`, which wakes the waiters of every process at once (no
polling). Leases held by this process are renewed every `lease_s / 3`, so a long stream keeps its
slot and a process that dies (kill -9) gives its slots back within `lease_s`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from .. import redis_url

log = logging.getLogger("gateway.leases")

PREFIX = "gw:slots:"
POOL_SIZE = 16   # connections to Redis per process, all opened at start (see `open`)

# KEYS: the provider's set. ARGV: slot id, limit, lease ms. 0: taken; else ms until a lease lapses.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease = tonumber(ARGV[3])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], 2 * lease)
  return 0
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(first[2]) - now + 1)
"""

# KEYS: the set. ARGV: slot id, the channel (not a key: in a Cluster a publish reaches every node).
_GIVE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then redis.call('PUBLISH', ARGV[2], '1') end
return 0
"""

# KEYS: the set. ARGV: lease ms, then the slot ids this process holds. Re-adding a slot whose lease
# lapsed (a stall, a restarted Redis) is on purpose: the set says what is really in flight.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + lease, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], 2 * lease)
return 0
"""


def channel(provider: str) -> str:
    return f"{PREFIX}{provider}:freed"


class Leases:
    """The Redis side of the global limiters of one process: the scripts, and one subscription that
    wakes a provider's waiters when a slot frees anywhere. Its client (`redis`) is the process's
    one connection pool to the state backend: the keys' counters use it too."""

    def __init__(self, url: str, timeout_s: float, lease_s: float):
        self.timeout_s = timeout_s
        self.lease_ms = max(1, int(lease_s * 1000))
        # A fixed pool, opened at start: under a burst, commands wait (well under a millisecond)
        # for a connection rather than each open one, which took 15-20 ms for twenty at once.
        self.redis = redis_url.connect(url, timeout_s, POOL_SIZE)
        # Its own connection without a read timeout: a subscription waits as long as it must.
        self._subscriber = redis_url.subscriber(url)
        self._take = self.redis.register_script(_TAKE)
        self._give = self.redis.register_script(_GIVE)
        self._renew = self.redis.register_script(_RENEW)
        self._wakers: dict[str, set[Callable[[], None]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()   # the providers to listen for changed
        self.subscribed = False           # the subscription is up (else waiters also wake on a timer)
        self.errors = 0                   # failed or late calls of every limiter on it (gateway_state_errors_total)

    async def open(self) -> None:
        """Load the scripts and open the pool's connections before the first request needs them (a
        first call would otherwise take three round trips: the script unknown, loaded, run). A
        Redis that is down now is no error: the limiters fall back as `on_error` says until it is up."""
        try:
            async with asyncio.timeout(max(self.timeout_s, 2.0)):
                for script in (self._take, self._give, self._renew):
                    script.sha = await self.redis.script_load(script.script)
                await asyncio.gather(*(self.redis.ping() for _ in range(POOL_SIZE)))
        except Exception as exc:
            log.warning("state backend redis not reachable at start (%s: %s)", type(exc).__name__, exc)

    # ---- the scripts (each one round trip; callers bound them with a timeout) -----------------

    async def take(self, provider: str, slot_id: str, limit: int) -> int:
        """0 when the slot is taken, else the milliseconds until the earliest lease lapses."""
        return int(await self._take(keys=[PREFIX + provider], args=[slot_id, limit, self.lease_ms]))

    async def give(self, provider: str, slot_id: str) -> None:
        await self._give(keys=[PREFIX + provider], args=[slot_id, channel(provider)])

    async def renew(self, provider: str, slot_ids: list[str]) -> None:
        await self._renew(keys=[PREFIX + provider], args=[self.lease_ms, *slot_ids])

    # ---- wake-ups ---------------------------------------------------------------------------

    def watch(self, provider: str, wake: Callable[[], None]) -> None:
        self._wakers.setdefault(provider, set()).add(wake)
        self._changed.set()
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    def unwatch(self, provider: str, wake: Callable[[], None]) -> None:
        wakers = self._wakers.get(provider)
        if wakers is not None:
            wakers.discard(wake)
            if not wakers:
                del self._wakers[provider]
        self._changed.set()

    async def _listen(self) -> None:
        """Keep one subscription to the watched providers' channels; on any trouble, wake everyone
        (they retry and fall back to a timer) and subscribe again a second later."""
        while True:
            pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                listening: set[str] = set()   # grows only: a provider dropped by a reload is ignored
                while True:
                    self._changed.clear()
                    wanted = {channel(p) for p in self._wakers}
                    if wanted - listening:
                        await pubsub.subscribe(*(wanted - listening))
                        listening |= wanted
                    self.subscribed = bool(listening)
                    if not listening:
                        await self._changed.wait()
                        continue
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        name = message["channel"].decode()[len(PREFIX):-len(":freed")]
                        for wake in list(self._wakers.get(name, ())):
                            wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.subscribed:
                    log.warning("lost the subscription to freed slots (%s: %s); waiters poll until it is back",
                                type(exc).__name__, exc)
                self.subscribed = False
                for wakers in list(self._wakers.values()):
                    for wake in list(wakers):
                        wake()
                await asyncio.sleep(1.0)
            finally:
                try:
                    async with asyncio.timeout(1.0):
                        await pubsub.aclose()
                except Exception:
                    pass

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.wait({self._listener}, timeout=2.0)
        await self._subscriber.aclose()
        await self.redis.aclose()
