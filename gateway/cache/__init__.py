"""The hybrid cache: what may be cached (the plan), the exact layer, the semantic layer, and
single-flight coalescing of identical misses. See README "Cache" for the rules.

The pipeline asks one question, `consult`, and gets one of three answers:
  Bypass  the cache is not for this request (and why);
  Hit     a stored answer (exact, semantic, or an identical request's that was in flight);
  Lead    a miss: this request makes the upstream call for its key, then `answer`s and
          `complete`s the lead (or `abandon`s it when there is no answer).
The order of the layers, the flight and the store belong to the cache alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

from .. import tracing
from ..config import CacheConfig, RouteCacheConfig
from ..inbound.openai import message_text
from ..upstream.target import Target
from .coalesce import Flight, Flights
from .embeddings import EmbeddingsCache
from .entry import Entry, Store
from .keys import exact_key, semantic_partition
from .memory import MemoryStore
from .plan import Bypass, controls
from .redis_store import RedisStore

log = logging.getLogger("gateway.cache")

SYSTEM_ROLES = frozenset({"system", "developer"})

__all__ = ["Bypass", "Cache", "CachePlan", "Entry", "Hit", "Lead", "Store"]


@dataclass(slots=True)
class CachePlan:
    key: str
    lookup: bool                 # False on `Cache-Control: no-cache`
    store: bool                  # False on `Cache-Control: no-store`
    ttl_s: float
    finish_reasons: frozenset[str]
    partition: str | None = None  # set when the semantic layer may answer
    text: str | None = None       # the last user message, for the semantic layer


@dataclass(slots=True)
class Hit:
    entry: Entry
    kind: str                                  # "hit-exact" | "hit-semantic"
    key: str
    layers: dict[str, str]                     # layer -> hit | miss, the layers consulted
    similarity: float | None = None            # semantic hits
    # Semantic hits: (model, usage) of the judge calls the lookup made, taken off the hit's saving.
    judge_usage: list[tuple[str, dict[str, Any]]] | None = None
    coalesced: bool = False                    # the answer of an identical request in flight


class Lead:
    """A miss whose upstream call this request makes. Ends in exactly one of: `answer` and then
    `complete` (the entry, if storable, goes to the followers at once and to the store after the
    client's reply), or `abandon` (no answer: followers go upstream on their own). Both ends are
    safe to repeat."""

    __slots__ = ("key", "layers", "_cache", "_plan", "_flight", "_entry", "_over")

    def __init__(self, cache: "Cache", plan: CachePlan, flight: Flight | None, layers: dict[str, str]):
        self.key = plan.key
        self.layers = layers
        self._cache = cache
        self._plan = plan
        self._flight = flight
        self._entry: Entry | None = None
        self._over = False

    def answer(self, model: str, completion: dict[str, Any] | None, raw: bytes | None = None) -> None:
        """The upstream's answer (None: nothing that may be stored). Followers get it now."""
        if completion is not None and self._cache.storable(self._plan, completion):
            self._entry = Entry(model, completion, raw)
        if self._flight is not None:
            self._flight.resolve(self._entry)

    async def complete(self) -> None:
        """Store the answered entry, then end the flight: until the entry can be read, an
        identical request still finds the flight and gets the entry from it, here and (through
        the lock) on other replicas."""
        if self._over:
            return
        self._over = True
        flight = self._flight
        if flight is not None:
            flight.resolve(self._entry)
        try:
            if self._entry is not None:
                await self._cache.put(self._plan, self._entry)
        finally:
            if flight is not None:
                flight.close()

    def abandon(self) -> None:
        if self._over:
            return
        self._over = True
        if self._flight is not None:
            self._flight.resolve(None)
            self._flight.close()


class Cache:
    def __init__(self, config: CacheConfig, store: Store, semantic: Any | None, embeddings_store: Store | None = None):
        self.config = config
        self.store = store
        self.semantic = semantic
        self.flights = Flights(store, self.get, config.exact.lock_ms, config.exact.lock_lease_ms)
        # /v1/embeddings items: a store of the exact layer's kind, of their own (gateway/cache/embeddings.py).
        self.embeddings = EmbeddingsCache(
            config, embeddings_store or MemoryStore(config.exact.max_entries, config.exact.eviction))

    @classmethod
    async def open(cls, config: CacheConfig, targets: Mapping[str, Target]) -> "Cache":
        exact = config.exact
        store: Store
        embeddings_store: Store
        if exact.backend == "redis":
            redis_store = RedisStore(exact.redis_url, exact.timeout_ms, exact.cooldown_s)
            await redis_store.warm()
            store = redis_store
            embeddings_store = RedisStore(exact.redis_url, exact.timeout_ms, exact.cooldown_s)
            await embeddings_store.warm()
        else:
            store = MemoryStore(exact.max_entries, exact.eviction)
            embeddings_store = MemoryStore(exact.max_entries, exact.eviction)
        semantic = None
        if config.semantic.enabled and config.cacheable != "never":
            # Imported when used: the Qdrant client and the embedders cost startup time otherwise.
            from .semantic import SemanticCache, make_embedder, make_judge

            semantic = await SemanticCache.open(
                config.semantic, make_embedder(config.semantic.embedder, targets),
                make_judge(config.semantic.verify, targets),
            )
        return cls(config, store, semantic, embeddings_store)

    async def close(self) -> None:
        await self.store.close()
        await self.embeddings.close()
        if self.semantic is not None:
            await self.semantic.close()

    # ---- the question the pipeline asks ------------------------------------------------------

    async def consult(self, route: str, targets: list[str], rules: RouteCacheConfig, payload: dict[str, Any],
                      headers: Mapping[str, str], tenant: str,
                      spent: list[tuple[str, dict[str, Any]]] | None = None, api: str | None = None,
                      trace: Any = None) -> "Hit | Lead | Bypass":
        """For a chat request: the exact layer, then the semantic one (when the route allows),
        then the flight on the exact key. `spent` gets the semantic layer's own calls (model, usage).
        `api`: the inbound API when not chat completions (its requests have keys of their own)."""
        plan = self.plan(route, targets, rules, payload, headers, tenant, api)
        if isinstance(plan, Bypass):
            return plan
        layers: dict[str, str] = {}
        if plan.lookup:
            step = tracing.step(trace, tracing.CACHE_EXACT)   # None when tracing is off
            entry = await self.get(plan.key)
            tracing.end(step, tracing.HIT if entry else tracing.MISS)
            layers["exact"] = "hit" if entry else "miss"
            if entry is not None:
                return Hit(entry, "hit-exact", plan.key, layers)
            if plan.partition is not None:
                step = tracing.step(trace, tracing.CACHE_SEMANTIC)
                found = await self._lookup_semantic(plan, spent, trace, step)
                tracing.end(step, tracing.HIT if found else tracing.MISS)
                layers["semantic"] = "hit" if found else "miss"
                if found is not None:
                    entry, hit = found
                    return Hit(entry, "hit-semantic", plan.key, layers, hit.similarity, hit.judge_usage)
        flight, shared = await self.flights.join(plan.key)
        if shared is not None:
            return Hit(shared, "hit-exact", plan.key, layers, coalesced=True)
        return Lead(self, plan, flight, layers)

    # ---- what may be cached ---------------------------------------------------------------

    def plan(self, route: str, targets: list[str], rules: RouteCacheConfig, payload: dict[str, Any],
             headers: Mapping[str, str], tenant: str, api: str | None = None) -> CachePlan | Bypass:
        """The cache plan for a chat request, or why it bypasses the cache."""
        if not rules.enabled:
            return Bypass("route cache off")
        cacheable = rules.cacheable or self.config.cacheable
        if cacheable == "never":
            return Bypass("cacheable: never")
        if cacheable == "deterministic" and payload.get("temperature") != 0:
            return Bypass("temperature is not 0")
        n = payload.get("n")
        if n is not None and n != 1 and not rules.cache_n:
            return Bypass("n > 1")
        asked = controls(headers, rules, self.config.exact)
        if isinstance(asked, Bypass):
            return asked
        lookup, store, ttl_s = asked
        plan = CachePlan(exact_key(route, targets, tenant, payload, api), lookup, store, ttl_s,
                         frozenset(rules.finish_reasons))
        if self.semantic is not None and rules.semantic and isinstance(payload.get("messages"), list):
            text = self._semantic_text(payload["messages"])
            if text is not None:
                plan.text = text
                plan.partition = semantic_partition(route, targets, tenant, payload, api)
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
        return None if found is None else self.store.unpack(found)

    async def _lookup_semantic(self, plan: CachePlan, spent: list[tuple[str, dict[str, Any]]] | None,
                               trace: Any = None, step: Any = None) -> tuple[Entry, Any] | None:
        """The entry a semantic hit serves, with the hit (similarity, judge calls), or None."""
        if self.semantic is None or plan.partition is None or plan.text is None:
            return None
        hit = await self.semantic.lookup(plan.partition, plan.text, spent, trace, step)
        entry = Entry.from_dict(hit.answer) if hit is not None else None
        return (entry, hit) if entry is not None else None

    async def put(self, plan: CachePlan, entry: Entry) -> None:
        await self.store.set(plan.key, self.store.pack(entry), plan.ttl_s)
        if self.semantic is not None and plan.partition is not None and plan.text is not None:
            await self.semantic.store(plan.partition, plan.text, entry.to_dict(), plan.ttl_s)

    async def entries(self) -> dict[str, int | None]:
        exact = await self.store.count()
        semantic = None
        if self.semantic is not None:
            semantic = await self.semantic.count()
        return {"exact": exact, "semantic": semantic, "embeddings": await self.embeddings.count()}
