"""Per-key limits (`auth.keys[]`: rpm, tpm, budget), counted where `state:` says: in this process,
or in a Redis shared by every replica and worker.

All three are checked, and taken, in one atomic step before the call (in Redis: one Lua script, one
round trip); after the answer one more step corrects the tokens to the real usage and charges the
real cost (in Redis: one pipeline, not waited for by the client).

- rpm and tpm: sliding-window counters: this minute's count plus the last minute's, weighted by how
  much of it is still inside the last 60 s (Cloudflare's approximation of a moving window: two
  numbers per key and limit, however high the limit). A request reserves its estimated tokens
  (prompt + max tokens); the reservation is corrected to the real usage after the answer.
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
from typing import Any, Protocol

from .config import AuthKey, KeyBudget, StateConfig
from .errors import GatewayError, limits_unavailable

log = logging.getLogger("gateway.quota")

LOG_EVERY_S = 10.0
MINUTE = 60
OK, OVER_RPM, OVER_TPM, OVER_BUDGET = 0, 1, 2, 3

# KEYS: requests this minute, last minute; tokens this minute, last minute; spend this period.
# ARGV: rpm, tpm, tokens, weight of the last minute, budget usd (a limit of -1: none), bucket ttl.
_ADMIT = """
local w = tonumber(ARGV[4])
local function over(cur_key, prev_key, limit, cost)
  if limit < 0 then return false end
  local cur = tonumber(redis.call('GET', cur_key) or '0')
  local prev = tonumber(redis.call('GET', prev_key) or '0')
  return prev * w + cur + cost > limit
end
local budget = tonumber(ARGV[5])
if budget >= 0 and tonumber(redis.call('GET', KEYS[5]) or '0') >= budget then return 3 end
if over(KEYS[1], KEYS[2], tonumber(ARGV[1]), 1) then return 1 end
local tokens = tonumber(ARGV[3])
if over(KEYS[3], KEYS[4], tonumber(ARGV[2]), tokens) then return 2 end
if tonumber(ARGV[1]) >= 0 then
  redis.call('INCR', KEYS[1]); redis.call('EXPIRE', KEYS[1], ARGV[6])
end
if tonumber(ARGV[2]) >= 0 then
  redis.call('INCRBY', KEYS[3], tokens); redis.call('EXPIRE', KEYS[3], ARGV[6])
end
return 0
"""


@dataclass(slots=True)
class Admission:
    """What a request took from its key's limits, settled once its answer is known."""

    key: AuthKey
    minute: int           # the minute whose buckets it counted in
    tokens: int           # reserved against tpm (0: the key has no tpm)


@dataclass(slots=True)
class Window:
    minute: int           # whole minutes since the epoch
    weight: float         # how much of the last minute is still inside the last 60 s
    into_s: float         # seconds into this minute


def window(now: float) -> Window:
    minute, into = divmod(now, MINUTE)
    return Window(int(minute), 1 - into / MINUTE, into)


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


class Counters(Protocol):
    async def admit(self, key: AuthKey, tokens: int, at: Window, period: str) -> int:
        """OK (and the request and its tokens counted), or which limit it is over (nothing counted)."""

    async def settle(self, name: str, minute: int, tokens_delta: int, period: str | None, usd: float,
                     ttl_s: float | None) -> None: ...

    async def usage(self, name: str, at: Window, period: str) -> tuple[float, float, float]:
        """Requests and tokens in the last 60 s, spend in the period."""

    async def close(self) -> None: ...


class MemoryCounters:
    """The counters in this process (a dict per kind, the minutes before last dropped as they pass)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.tokens: dict[tuple[str, int], int] = {}
        self.spend: dict[tuple[str, str], float] = {}
        self._minute = 0

    def _forget(self, minute: int) -> None:
        if minute != self._minute:
            self._minute = minute
            for counts in (self.requests, self.tokens):
                for old in [k for k in counts if k[1] < minute - 1]:
                    del counts[old]

    @staticmethod
    def _in_window(counts: dict[tuple[str, int], int], name: str, at: Window) -> float:
        return counts.get((name, at.minute - 1), 0) * at.weight + counts.get((name, at.minute), 0)

    async def admit(self, key: AuthKey, tokens: int, at: Window, period: str) -> int:
        self._forget(at.minute)
        name = key.name
        if key.budget is not None and self.spend.get((name, period), 0.0) >= key.budget.usd:
            return OVER_BUDGET
        if key.rpm is not None and self._in_window(self.requests, name, at) + 1 > key.rpm:
            return OVER_RPM
        if key.tpm is not None and self._in_window(self.tokens, name, at) + tokens > key.tpm:
            return OVER_TPM
        if key.rpm is not None:
            self.requests[(name, at.minute)] = self.requests.get((name, at.minute), 0) + 1
        if key.tpm is not None:
            self.tokens[(name, at.minute)] = self.tokens.get((name, at.minute), 0) + tokens
        return OK

    async def settle(self, name: str, minute: int, tokens_delta: int, period: str | None, usd: float,
                     ttl_s: float | None) -> None:
        if tokens_delta and (name, minute) in self.tokens:
            self.tokens[(name, minute)] += tokens_delta
        if period is not None:
            self.spend[(name, period)] = self.spend.get((name, period), 0.0) + usd

    async def usage(self, name: str, at: Window, period: str) -> tuple[float, float, float]:
        return (self._in_window(self.requests, name, at), self._in_window(self.tokens, name, at),
                self.spend.get((name, period), 0.0))

    async def close(self) -> None:
        pass


class RedisCounters:
    """The same in Redis, shared by every replica and worker: one script to admit, one pipeline to
    settle. On the process's pool to the state backend (`Leases.redis`), which it does not close."""

    def __init__(self, client: Any):
        self.redis = client
        self._admit = self.redis.register_script(_ADMIT)

    @staticmethod
    def _keys(name: str, minute: int, period: str) -> list[str]:
        """A key's counters, all in one hash slot (`{name}`), as a script in a Redis Cluster needs."""
        tag = f"gw:quota:{{{name}}}"
        return [f"{tag}:req:{minute}", f"{tag}:req:{minute - 1}", f"{tag}:tok:{minute}", f"{tag}:tok:{minute - 1}",
                f"{tag}:usd:{period}"]

    async def admit(self, key: AuthKey, tokens: int, at: Window, period: str) -> int:
        args = [key.rpm if key.rpm is not None else -1, key.tpm if key.tpm is not None else -1, tokens, at.weight,
                key.budget.usd if key.budget is not None else -1, 2 * MINUTE + 5]
        return int(await self._admit(keys=self._keys(key.name, at.minute, period), args=args))

    async def settle(self, name: str, minute: int, tokens_delta: int, period: str | None, usd: float,
                     ttl_s: float | None) -> None:
        keys = self._keys(name, minute, period or "")
        async with self.redis.pipeline(transaction=False) as pipe:   # each step atomic on its own
            if tokens_delta:
                pipe.incrby(keys[2], tokens_delta)
            if period is not None:
                pipe.incrbyfloat(keys[4], usd)
                if ttl_s is not None:
                    pipe.expire(keys[4], int(ttl_s) + 3600)
            await pipe.execute()

    async def usage(self, name: str, at: Window, period: str) -> tuple[float, float, float]:
        values = [float(v or 0) for v in await self.redis.mget(self._keys(name, at.minute, period))]
        return values[1] * at.weight + values[0], values[3] * at.weight + values[2], values[4]

    async def close(self) -> None:
        pass


class Quota:
    def __init__(self, config: StateConfig, redis: Any = None):
        """`redis`: the client of the state backend, given when `config.backend` is redis."""
        self.config = config
        self.timeout_s = config.timeout_ms / 1000
        self.counters: Counters = MemoryCounters() if redis is None else RedisCounters(redis)
        self.errors = 0
        self._logged_at = -math.inf
        self._settling: set[asyncio.Task[None]] = set()

    async def admit(self, key: AuthKey | None, tokens: int) -> Admission | None:
        """Take one request (and `tokens`, the estimate) from `key`'s limits, or raise 429."""
        if key is None or (key.rpm is None and key.tpm is None and key.budget is None):
            return None
        now = time.time()
        at = window(now)
        period, ends = period_of(key.budget, now) if key.budget is not None else ("", None)
        if key.tpm is not None and tokens > key.tpm:
            raise _over(key, f"{key.tpm} tokens per minute (this request alone may take {tokens})", MINUTE, "tokens")
        try:
            async with asyncio.timeout(self.timeout_s):
                verdict = await self.counters.admit(key, tokens, at, period)
        except Exception as exc:  # Redis down, slow, or refusing
            self._failed(exc)
            return None
        wait = max(1, math.ceil(MINUTE - at.into_s))   # when the last minute's weight starts to fall away
        if verdict == OVER_RPM:
            raise _over(key, f"{key.rpm} requests per minute", wait, "requests")
        if verdict == OVER_TPM:
            raise _over(key, f"{key.tpm} tokens per minute", wait, "tokens")
        if verdict == OVER_BUDGET:
            assert key.budget is not None
            resets = "" if ends is None else \
                " It resets at " + dt.datetime.fromtimestamp(ends, dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ") + "."
            raise GatewayError(429, f"The key '{key.name}' has used its budget of ${key.budget.usd:g} "
                                    f"({'in total' if ends is None else 'per ' + key.budget.period}).{resets}",
                               "insufficient_quota", "insufficient_quota",
                               headers={"retry-after": str(max(1, math.ceil(ends - now)))} if ends else None)
        return Admission(key, at.minute, tokens if key.tpm is not None else 0)

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
        delta = used_tokens - admission.tokens if admission.tokens else 0
        period, ends = period_of(key.budget, time.time()) if key.budget is not None and cost_usd > 0 else (None, None)
        if not delta and period is None:
            return
        try:
            async with asyncio.timeout(max(self.timeout_s, 1.0)):
                await self.counters.settle(key.name, admission.minute, delta, period, cost_usd,
                                           None if ends is None else ends - time.time())
        except Exception as exc:
            self._failed(exc, settling=True)

    async def report(self, keys: list[AuthKey]) -> list[dict[str, Any]]:
        """GET /admin/keys: per key, its limits, the last minute's requests and tokens, the period's spend."""
        now = time.time()
        at = window(now)
        out = []
        for key in keys:
            entry: dict[str, Any] = {"name": key.name, "models": key.models, "rpm": key.rpm, "tpm": key.tpm}
            period, ends = period_of(key.budget, now) if key.budget is not None else ("", None)
            try:
                async with asyncio.timeout(max(self.timeout_s, 1.0)):
                    requests, tokens, spent = await self.counters.usage(key.name, at, period)
            except Exception as exc:
                entry["error"] = f"the state backend did not answer: {type(exc).__name__}"
                out.append(entry)
                continue
            entry["requests_last_minute"] = round(requests)
            entry["tokens_last_minute"] = round(tokens)
            if key.budget is not None:
                entry["budget"] = {"usd": key.budget.usd, "period": key.budget.period, "spent_usd": round(spent, 8),
                                   "left_usd": round(max(0.0, key.budget.usd - spent), 8),
                                   "resets_at": None if ends is None else dt.datetime.fromtimestamp(
                                       ends, dt.timezone.utc).isoformat()}
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
            raise limits_unavailable() from None

    async def close(self) -> None:
        """Let the settlements under way finish (briefly), then drop the Redis connections."""
        if self._settling:
            await asyncio.wait(self._settling, timeout=2.0)
        await self.counters.close()


def _over(key: AuthKey, what: str, retry_after: int, kind: str) -> GatewayError:
    """429 as OpenAI words it: type "requests" or "tokens", code rate_limit_exceeded, Retry-After."""
    return GatewayError(429, f"The key '{key.name}' is over its limit of {what}; try again in {retry_after} s.",
                        kind, "rate_limit_exceeded", headers={"retry-after": str(retry_after)})
