"""The hybrid cache: what may be cached (the plan), the exact layer, the semantic layer, and
single-flight coalescing of identical misses. See README "Cache" for the rules."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import orjson

from ..config import CacheConfig, RouteCacheConfig
from ..errors import bad_request
from .coalesce import Flights
from .keys import exact_key, message_text, semantic_partition
from .memory import MemoryStore
from .redis_store import RedisStore

log = logging.getLogger("gateway.cache")

SYSTEM_ROLES = frozenset({"system", "developer"})


@dataclass(slots=True)
class Entry:
    """A cached answer: the model that gave it and the chat.completion it gave."""

    model: str
    completion: dict[str, Any]
    _body: bytes | None = None

    @property
    def body(self) -> bytes:
        """The completion as JSON, serialised once per entry, not once per hit."""
        if self._body is None:
            self._body = orjson.dumps(self.completion)
        return self._body

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "completion": self.completion}

    @classmethod
    def from_dict(cls, data: Any) -> "Entry | None":
        if not isinstance(data, dict) or not isinstance(data.get("completion"), dict):
            return None
        return cls(str(data.get("model") or ""), data["completion"])


@dataclass(slots=True)
class CachePlan:
    key: str
    lookup: bool                 # False on `Cache-Control: no-cache`
    store: bool                  # False on `Cache-Control: no-store`
    ttl_s: float
    finish_reasons: frozenset[str]
    partition: str | None = None  # set when the semantic layer may answer
    text: str | None = None       # the last user message, for the semantic layer


class Cache:
    def __init__(self, config: CacheConfig, store: MemoryStore | RedisStore, semantic: Any | None):
        self.config = config
        self.store = store
        self.semantic = semantic
        self.flights = Flights(store.lock, store.unlock, store.locked, self.get, config.exact.lock_ms)

    @classmethod
    async def open(cls, config: CacheConfig, targets: Mapping[str, Any]) -> "Cache":
        exact = config.exact
        store: MemoryStore | RedisStore
        if exact.backend == "redis":
            store = RedisStore(exact.redis_url, exact.timeout_ms, exact.cooldown_s)
            await store.warm()
        else:
            store = MemoryStore(exact.max_entries, exact.eviction)
        semantic = None
        if config.semantic.enabled and config.cacheable != "never":
            from .semantic import SemanticCache, make_embedder, make_judge

            semantic = await SemanticCache.open(
                config.semantic, make_embedder(config.semantic.embedder, targets),
                make_judge(config.semantic.verify, targets),
            )
        return cls(config, store, semantic)

    async def close(self) -> None:
        await self.store.close()
        if self.semantic is not None:
            await self.semantic.close()

    # ---- what may be cached ---------------------------------------------------------------

    def plan(self, route: str, targets: list[str], rules: RouteCacheConfig, payload: dict[str, Any],
             headers: Mapping[str, str], tenant: str) -> CachePlan | str:
        """The cache plan for a chat request, or the reason it bypasses the cache."""
        if not rules.enabled:
            return "route cache off"
        cacheable = rules.cacheable or self.config.cacheable
        if cacheable == "never":
            return "cacheable: never"
        if cacheable == "deterministic" and payload.get("temperature") != 0:
            return "temperature is not 0"
        n = payload.get("n")
        if n is not None and n != 1 and not rules.cache_n:
            return "n > 1"
        control = {part.strip().lower() for part in headers.get("cache-control", "").split(",")}
        lookup, store = "no-cache" not in control, "no-store" not in control
        if not lookup and not store:
            return "cache-control: no-cache, no-store"
        ttl_s = rules.ttl_s or self.config.exact.ttl_s
        asked = headers.get("x-gateway-cache-ttl")
        if asked is not None:
            if not asked.strip().isdigit() or int(asked) <= 0:
                raise bad_request("x-gateway-cache-ttl must be a positive whole number of seconds.")
            ttl_s = int(asked)
        plan = CachePlan(exact_key(route, targets, tenant, payload), lookup, store, ttl_s,
                         frozenset(rules.finish_reasons))
        if self.semantic is not None and rules.semantic:
            text = self._semantic_text(payload["messages"])
            if text is not None:
                plan.text = text
                plan.partition = semantic_partition(route, targets, tenant, payload)
        return plan

    def _semantic_text(self, messages: list[dict[str, Any]]) -> str | None:
        last = messages[-1]
        if last.get("role") != "user" or last.get("name"):
            return None
        if self.config.semantic.single_turn_only and any(m.get("role") not in SYSTEM_ROLES for m in messages[:-1]):
            return None
        text = message_text(last)
        return text if text and text.strip() else None

    def storable(self, plan: CachePlan, completion: dict[str, Any]) -> bool:
        """Only complete answers: every choice finished with an allowed reason, and some content."""
        choices = completion.get("choices")
        if not plan.store or not isinstance(choices, list) or not choices:
            return False
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("finish_reason") not in plan.finish_reasons:
                return False
            message = choice.get("message") or {}
            if not (message.get("content") or message.get("tool_calls")):
                return False
        return True

    # ---- the layers -----------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        found = await self.store.get(key)
        if found is None or isinstance(found, Entry):
            return found
        try:
            entry = Entry.from_dict(orjson.loads(found))
        except orjson.JSONDecodeError:
            entry = None
        if entry is None:
            self.store.errors += 1  # garbage in the store is a miss
        return entry

    async def lookup_semantic(self, plan: CachePlan) -> tuple[Entry, Any] | None:
        """The entry a semantic hit serves, with the hit (similarity, judge calls), or None."""
        if self.semantic is None or plan.partition is None or plan.text is None:
            return None
        hit = await self.semantic.lookup(plan.partition, plan.text)
        entry = Entry.from_dict(hit.answer) if hit is not None else None
        return (entry, hit) if entry is not None else None

    async def put(self, plan: CachePlan, entry: Entry) -> None:
        # The memory store keeps the entry itself; a shared store keeps its JSON.
        await self.store.set(plan.key, entry if isinstance(self.store, MemoryStore) else orjson.dumps(entry.to_dict()),
                             plan.ttl_s)
        if self.semantic is not None and plan.partition is not None and plan.text is not None:
            await self.semantic.store(plan.partition, plan.text, entry.to_dict(), plan.ttl_s)

    async def entries(self) -> dict[str, int | None]:
        exact = await self.store.count() if isinstance(self.store, RedisStore) else len(self.store)
        semantic = None
        if self.semantic is not None:
            semantic = await self.semantic.count()
        return {"exact": exact, "semantic": semantic}
