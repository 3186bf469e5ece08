"""Per-key limits (`auth.keys[]`: rpm, tpm, budget), counted where `state:` says: in this process,
or in a Redis shared by every replica and worker.

- rpm: the `limits` library's moving window (in Redis, one Lua script per check-and-count).
- tpm: a sliding-window counter (this minute's count plus the last minute's, weighted by how much
  of it is still inside the window). A request reserves its estimate (prompt + max tokens) before
  the call, in one atomic step; after the answer the reservation is corrected to the real usage.
- budget: spend per period (day | month | total, UTC), checked before the call and charged with the
  real cost after it, so requests in flight together can overshoot by what they cost.

A Redis that is down or slower than `state.timeout_ms` either lets the request through
(`on_error: allow`, counted in `errors`, logged at most every 10 s) or refuses it (503, `deny`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from .config import AuthKey, KeyBudget, StateConfig
from .errors import GatewayError

log = logging.getLogger("gateway.quota")

LOG_EVERY_S = 10.0
MINUTE = 60

# KEYS: this minute's bucket, the last minute's. ARGV: limit, cost, weight of the last minute, ttl.
_RESERVE = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
if prev * tonumber(ARGV[3]) + cur + tonumber(ARGV[2]) > tonumber(ARGV[1]) then return 0 end
redis.call('INCRBY', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


@dataclass(slots=True)
class Admission:
    """What a request took from its key's limits, settled once its answer is known."""

    key: AuthKey
    minute: int = 0       # the tpm bucket the reservation went into
    tokens: int = 0       # reserved against tpm (0: the key has no tpm)


def period_of(budget: KeyBudget, now: float) -> tuple[str, float | None]:
    """The budget's current period id and when it ends (UTC epoch seconds; None: never)."""
    day = dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
    if budget.period == "day":
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
        return f"day:{day.isoformat()}", end.timestamp()
    if budget.period == "month":
        first = day.replace(day=1)
        following = (first + dt.timedelta(days=32)).replace(day=1)
        return f"month:{first:%Y-%m}", dt.datetime.combine(following, dt.time(), dt.timezone.utc).timestamp()
    return "total", None


class MemoryCounters:
    """Token buckets and spend in this process."""

    def __init__(self) -> None:
        self.tokens: dict[tuple[str, int], int] = {}
        self.spend: dict[tuple[str, str], float] = {}

    async def reserve(self, name: str, limit: int, cost: int, minute: int, weight: float) -> bool:
        for old in [k for k in self.tokens if k[1] < minute - 1]:
            del self.tokens[old]
        cur, prev = self.tokens.get((name, minute), 0), self.tokens.get((name, minute - 1), 0)
        if prev * weight + cur + cost > limit:
            return False
        self.tokens[(name, minute)] = cur + cost
        return True

    async def add_tokens(self, name: str, minute: int, delta: int) -> None:
        self.tokens[(name, minute)] = self.tokens.get((name, minute), 0) + delta

    async def used_tokens(self, name: str, minute: int, weight: float) -> float:
        return self.tokens.get((name, minute - 1), 0) * weight + self.tokens.get((name, minute), 0)

    async def spent(self, name: str, period: str) -> float:
        return self.spend.get((name, period), 0.0)

    async def charge(self, name: str, period: str, usd: float, ttl_s: float | None) -> None:
        self.spend[(name, period)] = self.spend.get((name, period), 0.0) + usd


class RedisCounters:
    """The same in Redis: one script for the tpm check-and-reserve, single commands for the rest."""

    def __init__(self, url: str, timeout_s: float):
        import redis.asyncio as redis

        self.redis = redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._reserve = self.redis.register_script(_RESERVE)

    @staticmethod
    def _bucket(name: str, minute: int) -> str:
        return f"gw:quota:tpm:{name}:{minute}"

    async def reserve(self, name: str, limit: int, cost: int, minute: int, weight: float) -> bool:
        keys = [self._bucket(name, minute), self._bucket(name, minute - 1)]
        return bool(await self._reserve(keys=keys, args=[limit, cost, weight, 2 * MINUTE + 5]))

    async def add_tokens(self, name: str, minute: int, delta: int) -> None:
        await self.redis.incrby(self._bucket(name, minute), delta)

    async def used_tokens(self, name: str, minute: int, weight: float) -> float:
        cur, prev = await self.redis.mget(self._bucket(name, minute), self._bucket(name, minute - 1))
        return int(prev or 0) * weight + int(cur or 0)

    async def spent(self, name: str, period: str) -> float:
        return float(await self.redis.get(f"gw:quota:usd:{name}:{period}") or 0.0)

    async def charge(self, name: str, period: str, usd: float, ttl_s: float | None) -> None:
        key = f"gw:quota:usd:{name}:{period}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incrbyfloat(key, usd)
            if ttl_s is not None:
                pipe.expire(key, int(ttl_s) + 3600)
            await pipe.execute()


class Quota:
    def __init__(self, config: StateConfig):
        self.config = config
        self.timeout_s = config.timeout_ms / 1000
        if config.backend == "memory":
            storage: Storage = MemoryStorage()
            self.counters: MemoryCounters | RedisCounters = MemoryCounters()
        else:
            storage = RedisStorage("async+" + config.redis_url, implementation="redispy", key_prefix="gw:quota",
                                   socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s)
            self.counters = RedisCounters(config.redis_url, self.timeout_s)
        self.windows = MovingWindowRateLimiter(storage)
        self.errors = 0
        self._logged_at = -math.inf
        self._settling: set[asyncio.Task[None]] = set()

    async def admit(self, key: AuthKey | None, tokens: int) -> Admission | None:
        """Take one request (and `tokens`, the estimate) from `key`'s limits, or raise 429."""
        if key is None or (key.rpm is None and key.tpm is None and key.budget is None):
            return None
        admission = Admission(key)
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._admit(admission, tokens, time.time())
        except GatewayError:
            raise
        except Exception as exc:  # Redis down, slow, or refusing
            self._failed(exc)
            return None
        return admission

    async def _admit(self, admission: Admission, tokens: int, now: float) -> None:
        key = admission.key
        if key.budget is not None:
            period, ends = period_of(key.budget, now)
            spent = await self.counters.spent(key.name, period)
            if spent >= key.budget.usd:
                resets = (" It resets at " + dt.datetime.fromtimestamp(ends, dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
                          + ".") if ends is not None else ""
                raise GatewayError(429, f"The key '{key.name}' has used its budget of ${key.budget.usd:g} "
                                        f"({'in total' if ends is None else 'per ' + key.budget.period}).{resets}",
                                   "insufficient_quota", "insufficient_quota",
                                   headers={"retry-after": str(max(1, math.ceil(ends - now)))} if ends else None)
        if key.rpm is not None:
            item = RateLimitItemPerMinute(key.rpm)
            if not await self.windows.hit(item, "rpm", key.name):
                stats = await self.windows.get_window_stats(item, "rpm", key.name)
                raise _over(key, f"{key.rpm} requests per minute", max(1, math.ceil(stats.reset_time - now)), "requests")
        if key.tpm is not None:
            minute, into = divmod(now, MINUTE)
            if tokens > key.tpm:
                raise _over(key, f"{key.tpm} tokens per minute (this request alone may take {tokens})", MINUTE, "tokens")
            if not await self.counters.reserve(key.name, key.tpm, tokens, int(minute), 1 - into / MINUTE):
                raise _over(key, f"{key.tpm} tokens per minute", max(1, math.ceil(MINUTE - into)), "tokens")
            admission.minute, admission.tokens = int(minute), tokens

    def settle(self, admission: Admission | None, used_tokens: int, cost_usd: float) -> None:
        """After the answer (on the event loop, never waited for): the tpm reservation corrected to
        what was used, the spend charged."""
        if admission is None:
            return
        task = asyncio.get_running_loop().create_task(self._settle(admission, used_tokens, cost_usd))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, admission: Admission, used_tokens: int, cost_usd: float) -> None:
        key = admission.key
        try:
            async with asyncio.timeout(max(self.timeout_s, 1.0)):
                if key.tpm is not None and admission.tokens and used_tokens != admission.tokens:
                    await self.counters.add_tokens(key.name, admission.minute, used_tokens - admission.tokens)
                if key.budget is not None and cost_usd > 0:
                    period, ends = period_of(key.budget, time.time())
                    await self.counters.charge(key.name, period, cost_usd, None if ends is None else ends - time.time())
        except Exception as exc:
            try:
                self._failed(exc, settling=True)
            except GatewayError:
                pass

    async def report(self, keys: list[AuthKey]) -> list[dict[str, Any]]:
        """GET /admin/keys: per key, this minute's requests and tokens, the period's spend."""
        now = time.time()
        minute, into = divmod(now, MINUTE)
        out = []
        for key in keys:
            entry: dict[str, Any] = {"name": key.name, "models": key.models, "rpm": key.rpm, "tpm": key.tpm}
            try:
                async with asyncio.timeout(max(self.timeout_s, 1.0)):
                    if key.rpm is not None:
                        stats = await self.windows.get_window_stats(RateLimitItemPerMinute(key.rpm), "rpm", key.name)
                        entry["requests_last_minute"] = key.rpm - stats.remaining
                    if key.tpm is not None:
                        entry["tokens_last_minute"] = round(await self.counters.used_tokens(
                            key.name, int(minute), 1 - into / MINUTE))
                    if key.budget is not None:
                        period, ends = period_of(key.budget, now)
                        spent = await self.counters.spent(key.name, period)
                        entry["budget"] = {"usd": key.budget.usd, "period": key.budget.period, "spent_usd": round(spent, 8),
                                           "left_usd": round(max(0.0, key.budget.usd - spent), 8),
                                           "resets_at": None if ends is None else dt.datetime.fromtimestamp(
                                               ends, dt.timezone.utc).isoformat()}
            except Exception as exc:
                entry["error"] = f"the state backend did not answer: {type(exc).__name__}"
            out.append(entry)
        return out

    def _failed(self, exc: BaseException, settling: bool = False) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning("state backend %s failed (%s: %s); limits %s for now", self.config.backend,
                        type(exc).__name__, exc, "allow requests" if self.config.on_error == "allow" else "refuse them")
        if self.config.on_error == "deny" and not settling:
            raise GatewayError(503, "The gateway cannot check its limits now; try again shortly.", "server_error",
                               "limits_unavailable", headers={"retry-after": "1"}) from None

    async def close(self) -> None:
        """Let the settlements under way finish (briefly), then drop the Redis connections."""
        if self._settling:
            await asyncio.wait(self._settling, timeout=2.0)
        if isinstance(self.counters, RedisCounters):
            await self.counters.redis.aclose()


def _over(key: AuthKey, what: str, retry_after: int, kind: str) -> GatewayError:
    """429 as OpenAI words it: type "requests" or "tokens", code rate_limit_exceeded, Retry-After."""
    return GatewayError(429, f"The key '{key.name}' is over its limit of {what}; try again in {retry_after} s.",
                        kind, "rate_limit_exceeded", headers={"retry-after": str(retry_after)})
