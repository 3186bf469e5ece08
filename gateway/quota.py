"""Per-key request limits (`auth.keys[].rpm`), counted where `state:` says: in this process, or in a
Redis shared by every replica and worker.

The counting is the `limits` library's moving window: in memory, or in Redis where each check and
count is one Lua script on the server (no read-then-write from the gateway), so two replicas never
both take the last request of a minute. A Redis that is down or slower than `state.timeout_ms`
either lets the request through (`on_error: allow`, counted in `errors`, logged at most every 10 s)
or refuses it with 503 (`deny`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from .config import AuthKey, StateConfig
from .errors import GatewayError

log = logging.getLogger("gateway.quota")

LOG_EVERY_S = 10.0


class Quota:
    def __init__(self, config: StateConfig):
        self.config = config
        self.timeout_s = config.timeout_ms / 1000
        self.storage: Storage = MemoryStorage() if config.backend == "memory" else RedisStorage(
            "async+" + config.redis_url, implementation="redispy", key_prefix="gw:quota",
            socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s)
        self.windows = MovingWindowRateLimiter(self.storage)
        self.errors = 0
        self._logged_at = -math.inf

    async def admit(self, key: AuthKey | None) -> None:
        """Count one request of `key` against its rpm, or raise 429 (with Retry-After) when it has none left."""
        if key is None or key.rpm is None:
            return
        item = RateLimitItemPerMinute(key.rpm)
        try:
            async with asyncio.timeout(self.timeout_s):
                if await self.windows.hit(item, "rpm", key.name):
                    return
                stats = await self.windows.get_window_stats(item, "rpm", key.name)
        except Exception as exc:  # Redis down, slow, or refusing
            self._failed(exc)
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise GatewayError(429, f"The key '{key.name}' is over its limit of {key.rpm} requests per minute; "
                                f"try again in {retry_after} s.", "requests", "rate_limit_exceeded",
                           headers={"retry-after": str(retry_after)})

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning("state backend %s failed (%s: %s); limits %s for now", self.config.backend,
                        type(exc).__name__, exc, "allow requests" if self.config.on_error == "allow" else "refuse them")
        if self.config.on_error == "deny":
            raise GatewayError(503, "The gateway cannot check its limits now; try again shortly.", "server_error",
                               "limits_unavailable", headers={"retry-after": "1"}) from None
