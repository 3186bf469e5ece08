"""The semantic cache: serve a stored answer to a differently worded question that needs the same
answer, and only then.

lookup(partition, text):
  1. candidates: embed `text`, search Qdrant inside `partition` (top-k, cosine >= threshold);
  2. verification, best candidate first: the rule veto (always on), then the optional judge.
The first candidate that survives is served. Everything that goes wrong (embedder or Qdrant down,
slow, or answering garbage) is a miss, counted in `stats["errors"]`; that backend is then skipped
for `cooldown_s`. lookup and store never raise.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from cachetools import LRUCache

from ... import tracing
from ...config import SemanticCacheConfig
from .embedders import (Embedder, EmbedderBusy, EmbedderError, LocalEmbedder, OpenAIEmbedder, UnreadableText,
                        make_embedder)
from .guard import Guard
from .judge import Judge, JudgeBusy, JudgeError, LLMJudge, Verdict, make_judge
from .store import Candidate, VectorStore, open_store
from .veto import veto as rule_veto

__all__ = [
    "SemanticCache", "SemanticHit", "Embedder", "EmbedderError", "LocalEmbedder", "OpenAIEmbedder",
    "Judge", "JudgeError", "LLMJudge", "Verdict", "make_embedder", "make_judge",
]

log = logging.getLogger("gateway.cache.semantic")

# Loading a local model takes seconds; probing an embeddings server should not take a minute.
SETUP_TIMEOUT_S = 60.0

STAT_NAMES = ("hits", "misses", "errors", "embedder_errors", "qdrant_errors", "skipped", "busy", "too_long",
              "unreadable", "vetoes", "judge_calls", "judge_rejects", "judge_errors", "stores", "sweeps")


@dataclass
class SemanticHit:
    answer: dict[str, Any]       # the cached chat.completion JSON, as stored
    similarity: float            # cosine similarity of the served match
    matched_text: str            # the stored question that matched
    # (model, usage) of the judge calls this lookup made: spent, to take off the hit's saving.
    judge_usage: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class SemanticCache:
    def __init__(self, config: SemanticCacheConfig, embedder: Embedder, judge: Judge | None = None):
        self.config = config
        self.embedder = embedder
        self.judge = judge
        self.timeout_s = config.timeout_ms / 1000
        self.judge_timeout_s = (config.verify.timeout_ms / 1000) if config.verify else 2.0
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        # Every judge call's (model, usage), hits and misses alike, for cost accounting.
        # drain_judge_usage() empties it; bounded, so it cannot grow if nobody drains it.
        self.judge_usage: collections.deque[tuple[str, dict[str, Any]]] = collections.deque(maxlen=10_000)
        self._embedder_guard = Guard("embedder", config.cooldown_s, config.log_interval_s)
        self._qdrant_guard = Guard("qdrant", config.cooldown_s, config.log_interval_s)
        self._judge_guard = Guard("judge", config.cooldown_s, config.log_interval_s)
        # A store usually follows a lookup of the same text: keep its vector instead of embedding twice.
        self._vectors: LRUCache[str, list[float]] = LRUCache(maxsize=1024)
        self._store: VectorStore | None = None
        self._dim: int | None = None
        self._setup_task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, config: SemanticCacheConfig, embedder: Embedder, judge: Judge | None = None) -> "SemanticCache":
        cache = cls(config, embedder, judge)
        # Best effort: a backend that is down now is retried, in the background, after its cooldown.
        await cache._setup()
        cache._sweeper = asyncio.get_running_loop().create_task(cache._sweep_forever())
        return cache

    async def close(self) -> None:
        for task in (self._sweeper, self._setup_task):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        await self.embedder.close()
        if self._store is not None:
            try:
                await self._store.close()
            except Exception as exc:  # closing a broken connection must not fail shutdown
                log.debug("semantic cache: closing qdrant: %s", exc)

    # ---- setup ------------------------------------------------------------------------------

    def _ready(self) -> bool:
        """True once the embedder and the collection are up. Until then a request never waits
        for them (loading a local model takes seconds): it starts the setup in the background,
        unless a backend is cooling down, and is a miss."""
        if self._store is not None:
            return True
        if (self._setup_task is None or self._setup_task.done()) and \
                self._embedder_guard.available() and self._qdrant_guard.available():
            self._setup_task = asyncio.get_running_loop().create_task(self._setup())
        return False

    async def _setup(self) -> None:
        if self._dim is None:
            try:
                self._dim = await asyncio.wait_for(self.embedder.start(), SETUP_TIMEOUT_S)
            except Exception as exc:
                self._fail(self._embedder_guard, "embedder_errors", exc, SETUP_TIMEOUT_S)
                return
            self._embedder_guard.succeeded()
        store: VectorStore | None = None
        try:
            store = open_store(self.config.qdrant, self.config.collection, self.timeout_s)
            await asyncio.wait_for(store.ensure_collection(self._dim), max(self.timeout_s, 5.0))
        except Exception as exc:  # down, another size, or an on-disk path that another process holds
            self._fail(self._qdrant_guard, "qdrant_errors", exc, max(self.timeout_s, 5.0))
            try:
                if store is not None:
                    await store.close()
            except Exception:
                pass
            return
        self._qdrant_guard.succeeded()
        self._store = store

    def _fail(self, guard: Guard, stat: str, exc: BaseException, timeout_s: float | None = None) -> None:
        self.stats["errors"] += 1
        self.stats[stat] += 1
        if isinstance(exc, asyncio.TimeoutError):
            exc = TimeoutError(f"slower than {(timeout_s or self.timeout_s) * 1000:g} ms")
        guard.failed(exc)

    # ---- the two backends, each with its timeout and cooldown --------------------------------

    async def _embed(self, text: str, spent: list[tuple[str, dict[str, Any]]] | None = None,
                     headers: dict[str, str] | None = None) -> list[float] | None:
        vector = self._vectors.get(text)
        if vector is not None:
            return vector
        if not self._embedder_guard.available():
            self.stats["skipped"] += 1
            return None
        try:
            vector = (await asyncio.wait_for(self.embedder.embed([text], spent, headers), self.timeout_s))[0]
        except UnreadableText:
            self.stats["unreadable"] += 1  # the embedder is fine; this text is just not for it
            return None
        except EmbedderBusy:
            self.stats["busy"] += 1  # its provider is at its limit: a miss, not an outage
            return None
        except Exception as exc:
            self._fail(self._embedder_guard, "embedder_errors", exc)
            return None
        self._embedder_guard.succeeded()
        self._vectors[text] = vector
        return vector

    async def _search(self, partition: str, vector: list[float]) -> list[Candidate] | None:
        if self._store is None or not self._qdrant_guard.available():
            self.stats["skipped"] += 1
            return None
        try:
            found = await asyncio.wait_for(
                self._store.search(partition, vector, self.config.top_k, self.config.threshold), self.timeout_s)
        except Exception as exc:
            self._fail(self._qdrant_guard, "qdrant_errors", exc)
            return None
        self._qdrant_guard.succeeded()
        return found

    async def _judged_same(self, stored: str, incoming: str, spent: list[tuple[str, dict[str, Any]]],
                           headers: dict[str, str] | None = None) -> bool:
        assert self.judge is not None
        if not self._judge_guard.available():
            return False
        self.stats["judge_calls"] += 1
        try:
            verdict = await asyncio.wait_for(self.judge.same_answer(stored, incoming, headers), self.judge_timeout_s)
        except JudgeBusy:
            self.stats["busy"] += 1  # its provider is at its limit: a "no", not an outage
            return False
        except Exception as exc:
            # No verdict is a "no": the request goes upstream, which is always correct.
            self.stats["judge_errors"] += 1
            self.stats["errors"] += 1
            if isinstance(exc, asyncio.TimeoutError):
                exc = TimeoutError(f"no verdict within {self.judge_timeout_s * 1000:g} ms")
            self._judge_guard.failed(exc)
            return False
        self._judge_guard.succeeded()
        if verdict.usage is not None:
            spent.append((verdict.model, verdict.usage))
            self.judge_usage.append((verdict.model, verdict.usage))
        return verdict.same

    # ---- the interface ----------------------------------------------------------------------

    async def lookup(self, partition: str, text: str, spent: list[tuple[str, dict[str, Any]]] | None = None,
                     trace: Any = None, step: Any = None) -> SemanticHit | None:
        """The stored answer to a question that needs the same answer as `text`, or None.
        `spent` gets the (model, usage) of the calls it made (embedding, judge), hit or miss;
        `trace`, `step`: the request's span and the lookup's (gateway/tracing.py), for its own."""
        try:
            hit = await self._lookup(partition, text, spent if spent is not None else [], trace, step)
        except Exception as exc:  # a bug here must cost a miss, never the request
            log.exception("semantic cache: lookup failed: %s", exc)
            self.stats["errors"] += 1
            hit = None
        self.stats["hits" if hit is not None else "misses"] += 1
        return hit

    async def _lookup(self, partition: str, text: str, spent: list[tuple[str, dict[str, Any]]],
                      trace: Any = None, step: Any = None) -> SemanticHit | None:
        if not text.strip():
            return None
        if len(text) > self.config.max_text_chars:
            self.stats["too_long"] += 1
            return None
        if not self._ready():
            self.stats["skipped"] += 1
            return None
        embedding = tracing.step(trace, tracing.CACHE_EMBEDDING, parent=step)
        # A traced step's own traceparent goes with the embedder's and the judge's calls to a provider.
        vector = await self._embed(text, spent, tracing.headers(embedding, {}))
        tracing.end(embedding, error=None if vector is not None else "no_embedding")
        if vector is None:
            return None
        candidates = await self._search(partition, vector)
        if not candidates:
            return None
        judged: list[tuple[str, dict[str, Any]]] = []
        for candidate in sorted(candidates, key=lambda c: c.score, reverse=True):
            if candidate.text != text:
                # The search and each veto run on the event loop (the in-process store holds the
                # GIL; the veto is Python): yield between them, so that a burst of lookups whose
                # embeddings came back in one batch does not hold other requests for its sum.
                await asyncio.sleep(0)
                if rule_veto(candidate.text, text) is not None:
                    self.stats["vetoes"] += 1
                    continue
                if self.judge is not None:
                    judging = tracing.step(trace, tracing.CACHE_JUDGE, parent=step)
                    same = await self._judged_same(candidate.text, text, judged, tracing.headers(judging, {}))
                    tracing.end(judging, {"gateway.cache.judge.same": same})
                    if not same:
                        self.stats["judge_rejects"] += 1
                        continue
            spent.extend(judged)
            return SemanticHit(candidate.answer, candidate.score, candidate.text, judged)
        spent.extend(judged)
        return None

    async def store(self, partition: str, text: str, answer: dict[str, Any], ttl_s: float) -> None:
        """Remember `answer` for `text` in `partition` for `ttl_s` seconds (best effort)."""
        try:
            await self._store_one(partition, text, answer, ttl_s)
        except Exception as exc:
            log.exception("semantic cache: store failed: %s", exc)
            self.stats["errors"] += 1

    async def _store_one(self, partition: str, text: str, answer: dict[str, Any], ttl_s: float) -> None:
        if len(text) > self.config.max_text_chars or not text.strip() or not isinstance(answer, dict) or ttl_s <= 0:
            return
        if not self._ready():
            return
        vector = await self._embed(text)
        if vector is None or self._store is None or not self._qdrant_guard.available():
            return
        try:
            await asyncio.wait_for(self._store.upsert(partition, text, vector, answer, time.time() + ttl_s),
                                   self.timeout_s)
        except Exception as exc:
            self._fail(self._qdrant_guard, "qdrant_errors", exc)
            return
        self._qdrant_guard.succeeded()
        self.stats["stores"] += 1

    async def count(self) -> int | None:
        """Entries in the collection (expired ones until the sweep), or None when Qdrant is unavailable."""
        if self._store is None or not self._qdrant_guard.available():
            return None
        try:
            return await asyncio.wait_for(self._store.count(), self.timeout_s)
        except Exception as exc:
            self._fail(self._qdrant_guard, "qdrant_errors", exc)
            return None

    def drain_judge_usage(self) -> list[tuple[str, dict[str, Any]]]:
        """The (model, usage) of every judge call since the last drain."""
        drained = list(self.judge_usage)
        self.judge_usage.clear()
        return drained

    async def sweep(self) -> None:
        """Delete expired entries now (the periodic task calls this)."""
        if self._store is None or not self._qdrant_guard.available():
            return
        try:
            await asyncio.wait_for(self._store.sweep(), max(self.timeout_s, 5.0))
        except Exception as exc:
            self._fail(self._qdrant_guard, "qdrant_errors", exc)
            return
        self.stats["sweeps"] += 1

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            await self.sweep()
