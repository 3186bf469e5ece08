"""The semantic cache with real parts: Qdrant local mode, all-MiniLM-L6-v2 on CPU, the rule veto, a
judge and an embedder behind the fake upstream, and a stand-in Qdrant server that is slow or broken."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

from gateway.cache.semantic import SemanticCache, make_embedder, make_judge
from gateway.cache.semantic.embedders import LocalEmbedder
from gateway.config import (
    EmbedderConfig, JudgeConfig, ModelConfig, ProviderConfig, QdrantConfig, SemanticCacheConfig,
)
from gateway.upstream.client import Provider
from gateway.upstream.target import Target

from .fake_upstream import FakeUpstream, free_port

REFUND = "How long does a refund take to show up on my card?"
REFUND_PARAPHRASE = "How many days until I see my refund on my card?"


def answer(text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}


@pytest.fixture(scope="module")
def minilm() -> Any:
    return LocalEmbedder.load("all-MiniLM-L6-v2")  # once per module: loading and warming take seconds


def local_config(**overrides: Any) -> SemanticCacheConfig:
    # The default 200 ms is for production; a test machine running other suites can be slower.
    values: dict[str, Any] = {"enabled": True, "embedder": {"kind": "local", "model": "all-MiniLM-L6-v2"},
                              "timeout_ms": 3000}
    values.update(overrides)
    return SemanticCacheConfig.model_validate(values)


@pytest.fixture
async def open_cache(minilm) -> AsyncIterator[Any]:
    opened: list[SemanticCache] = []

    async def open_(config: SemanticCacheConfig | None = None, judge: Any = None, embedder: Any = None) -> SemanticCache:
        config = config or local_config()
        cache = await SemanticCache.open(config, embedder or LocalEmbedder("all-MiniLM-L6-v2", loaded=minilm), judge)
        opened.append(cache)
        return cache

    yield open_
    for cache in opened:
        await cache.close()


@pytest.fixture
async def provider_for(upstream: FakeUpstream) -> AsyncIterator[Any]:
    providers: list[Provider] = []

    def make(name: str = "fake", timeout_s: float = 10, **limits: Any) -> dict[str, Target]:
        provider = Provider(name, ProviderConfig(base_url=upstream.url, api_key="sk-test", timeout_s=timeout_s,
                                                 **limits))
        provider.open()
        providers.append(provider)
        return {m: Target(m, m, provider, ModelConfig(provider=name)) for m in ("gpt-4o-mini", "text-embedding-3-small")}

    yield make
    for provider in providers:
        await provider.close()


# ---- hits and misses -------------------------------------------------------------------------


async def test_a_paraphrase_is_served_the_stored_answer(open_cache):
    cache = await open_cache()
    await cache.store("p1", REFUND, answer("3 to 5 business days."), ttl_s=60)
    hit = await cache.lookup("p1", REFUND_PARAPHRASE)
    assert hit is not None
    assert hit.answer == answer("3 to 5 business days.")
    assert hit.matched_text == REFUND
    assert cache.config.threshold <= hit.similarity < 1
    assert cache.stats["hits"] == 1 and cache.stats["stores"] == 1 and cache.stats["errors"] == 0


@pytest.mark.parametrize("stored, incoming", [
    ("Can I return an item without a receipt?", "Can I return an item with a receipt?"),                # negation
    ("Is my data encrypted at rest?", "Why is my data not encrypted at rest?"),                          # negation
    ("How do I book a table for 4 people?", "How do I book a table for 12 people?"),                     # number
    ("How do I transfer money from PayPal to my bank account?",
     "How do I transfer money from my bank account to PayPal?"),                                         # direction
    ("How do I cancel my order before it ships?", "How do I cancel my order after it ships?"),           # one word
    ("What is the daily withdrawal limit on my debit card?",
     "What is the monthly withdrawal limit on my debit card?"),                                          # one word
])
async def test_near_misses_are_found_by_similarity_but_not_served(open_cache, stored, incoming):
    cache = await open_cache()
    await cache.store("p1", stored, answer("the stored answer"), ttl_s=60)
    assert await cache.lookup("p1", incoming) is None
    # The embedding found the stored question (that is the danger); the veto refused it.
    assert cache.stats["vetoes"] == 1
    assert cache.stats["misses"] == 1


async def test_the_best_surviving_candidate_is_served(open_cache):
    cache = await open_cache()
    await cache.store("p1", "How do I cancel my order after it ships?", answer("after"), ttl_s=60)
    await cache.store("p1", "How do I cancel my order before it ships?", answer("before"), ttl_s=60)
    hit = await cache.lookup("p1", "How do I cancel my order after it ships?")
    assert hit is not None and hit.answer == answer("after") and hit.similarity == pytest.approx(1.0, abs=1e-3)
    hit = await cache.lookup("p1", "How do I cancel my order before it ships?")
    assert hit is not None and hit.answer == answer("before")


async def test_partitions_never_share_hits(open_cache):
    cache = await open_cache()
    await cache.store("tenant-a|support", REFUND, answer("for tenant a"), ttl_s=60)
    assert await cache.lookup("tenant-b|support", REFUND) is None
    assert await cache.lookup("tenant-b|support", REFUND_PARAPHRASE) is None
    await cache.store("tenant-b|support", REFUND, answer("for tenant b"), ttl_s=60)
    assert (await cache.lookup("tenant-a|support", REFUND_PARAPHRASE)).answer == answer("for tenant a")
    assert (await cache.lookup("tenant-b|support", REFUND_PARAPHRASE)).answer == answer("for tenant b")


async def test_each_partition_gets_its_own_answer_to_the_same_question(open_cache):
    # Local mode filters partitions after an unfiltered search (see store.py): many partitions
    # holding the very same question must still each get their own answer.
    cache = await open_cache()
    for i in range(30):
        await cache.store(f"tenant-{i}", REFUND, answer(f"for tenant {i}"), ttl_s=60)
    for i in (0, 17, 29):
        assert (await cache.lookup(f"tenant-{i}", REFUND_PARAPHRASE)).answer == answer(f"for tenant {i}")
    assert await cache.lookup("tenant-30", REFUND) is None


async def test_storing_the_same_question_again_replaces_its_answer(open_cache):
    cache = await open_cache()
    await cache.store("p1", REFUND, answer("old"), ttl_s=60)
    await cache.store("p1", REFUND, answer("new"), ttl_s=60)
    assert (await cache.lookup("p1", REFUND)).answer == answer("new")
    assert await cache._store.count() == 1


async def test_text_the_model_cannot_read_skips_the_layer(open_cache):
    # all-MiniLM-L6-v2 reads Chinese as [UNK] tokens: any two Chinese questions look identical to it.
    cache = await open_cache()
    await cache.store("p1", "会员可以暂停吗？", answer("可以"), ttl_s=60)
    assert await cache.lookup("p1", "会员可以取消吗？") is None
    assert cache.stats["unreadable"] == 2 and cache.stats["errors"] == 0
    assert await cache._store.count() == 0


async def test_long_questions_skip_the_layer(open_cache):
    cache = await open_cache(local_config(max_text_chars=100))
    long = "Please summarise this contract clause for me: " + "the party of the first part " * 10
    await cache.store("p1", long, answer("summary"), ttl_s=60)
    assert await cache.lookup("p1", long) is None
    assert cache.stats["too_long"] == 1 and cache.stats["stores"] == 0


# ---- expiry ----------------------------------------------------------------------------------


async def test_an_expired_answer_is_never_served_and_the_sweep_deletes_it(open_cache):
    cache = await open_cache()
    await cache.store("p1", REFUND, answer("short-lived"), ttl_s=1.0)
    await cache.store("p1", "Do you ship to Canada?", answer("yes"), ttl_s=60)
    assert (await cache.lookup("p1", REFUND)) is not None
    await asyncio.sleep(1.0)
    assert await cache.lookup("p1", REFUND) is None        # filtered on read, before any sweep
    assert await cache._store.count() == 2
    await cache.sweep()
    assert await cache._store.count() == 1
    assert (await cache.lookup("p1", "Do you ship to Canada?")) is not None


async def test_the_periodic_sweep_runs_by_itself(open_cache):
    cache = await open_cache(local_config(sweep_interval_s=0.05))
    await cache.store("p1", REFUND, answer("short-lived"), ttl_s=0.05)
    deadline = time.monotonic() + 5
    while await cache._store.count() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await cache._store.count() == 0
    assert cache.stats["sweeps"] >= 1


async def test_the_store_runs_in_a_helper_process_that_ends_with_the_cache(open_cache):
    # Qdrant Edge holds the GIL while it searches: in the gateway's process a search would stall
    # the event loop. The helper is a child of the gateway's, and closing the cache ends it.
    cache = await open_cache()
    await cache.store("p1", REFUND, answer("3 to 5 days"), ttl_s=60)
    helper = cache._store._helper.process
    assert helper.pid != os.getpid() and helper.poll() is None
    assert Path(f"/proc/{helper.pid}/comm").read_text().strip() == "gateway-qdrant"
    await cache.close()
    assert helper.poll() is not None


async def test_a_helper_that_dies_is_a_miss_then_a_new_one_takes_over(open_cache):
    cache = await open_cache(local_config(cooldown_s=0.2))
    await cache.store("p1", REFUND, answer("3 to 5 days"), ttl_s=60)
    old = cache._store._helper
    os.kill(old.process.pid, signal.SIGSTOP)                         # hung: the lookup's search waits
    lookup = asyncio.ensure_future(cache.lookup("p1", REFUND_PARAPHRASE))
    deadline = time.monotonic() + 10
    while not old.waiting and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    os.kill(old.process.pid, signal.SIGKILL)                         # then dead, with a search in flight
    assert await lookup is None                                      # a miss, counted, never an error
    assert cache.stats["qdrant_errors"] == 1
    await asyncio.sleep(0.25)                                        # the cooldown
    # The new helper opens the same directory: what the old one wrote is still there.
    assert (await cache.lookup("p1", REFUND_PARAPHRASE)).answer == answer("3 to 5 days")
    assert cache._store._helper.process.pid != old.process.pid and old.process.poll() is not None


async def test_an_on_disk_store_keeps_answers_across_restarts(open_cache, tmp_path):
    config = local_config(qdrant={"path": str(tmp_path / "qdrant")})
    first = await open_cache(config)
    await first.store("p1", REFUND, answer("persisted"), ttl_s=60)
    await first.close()
    second = await open_cache(config)
    assert (await second.lookup("p1", REFUND_PARAPHRASE)).answer == answer("persisted")


# ---- the judge -------------------------------------------------------------------------------


async def test_a_judge_that_says_no_means_nothing_is_served(open_cache, upstream, provider_for):
    upstream.set(reply="no")
    judge = make_judge(JudgeConfig(model="gpt-4o-mini"), provider_for())
    cache = await open_cache(local_config(verify={"model": "gpt-4o-mini"}), judge=judge)
    await cache.store("p1", REFUND, answer("3 to 5 days"), ttl_s=60)
    assert await cache.lookup("p1", REFUND_PARAPHRASE) is None
    assert cache.stats["judge_calls"] == 1 and cache.stats["judge_rejects"] == 1
    call = upstream.seen[-1]
    assert call.path == "/v1/chat/completions"
    assert call.body["temperature"] == 0 and call.body["max_tokens"] == 1
    assert REFUND in call.body["messages"][-1]["content"] and REFUND_PARAPHRASE in call.body["messages"][-1]["content"]
    assert call.headers["authorization"] == "Bearer sk-test"
    # The call was spent even though nothing was served: its usage is there to be counted.
    assert [model for model, _ in cache.drain_judge_usage()] == ["gpt-4o-mini"]


async def test_a_judge_that_says_yes_serves_and_its_verdict_is_cached(open_cache, upstream, provider_for):
    upstream.set(reply="Yes")
    judge = make_judge(JudgeConfig(model="gpt-4o-mini"), provider_for())
    cache = await open_cache(local_config(verify={"model": "gpt-4o-mini"}), judge=judge)
    await cache.store("p1", REFUND, answer("3 to 5 days"), ttl_s=60)
    hit = await cache.lookup("p1", REFUND_PARAPHRASE)
    assert hit is not None and hit.answer == answer("3 to 5 days")
    assert [model for model, usage in hit.judge_usage] == ["gpt-4o-mini"]
    assert hit.judge_usage[0][1]["total_tokens"] > 0
    calls = upstream.calls_to("/v1/chat/completions")
    again = await cache.lookup("p1", REFUND_PARAPHRASE)
    assert again is not None and again.judge_usage == []          # a cached verdict costs nothing
    assert upstream.calls_to("/v1/chat/completions") == calls
    # The veto runs first: a near miss never reaches the judge.
    assert await cache.lookup("p1", "How long does a refund take to show up in my PayPal account?") is None
    assert upstream.calls_to("/v1/chat/completions") == calls


async def test_a_judge_that_fails_or_is_slow_means_a_miss(open_cache, upstream, provider_for):
    judge = make_judge(JudgeConfig(model="gpt-4o-mini"), provider_for())
    config = local_config(verify={"model": "gpt-4o-mini", "timeout_ms": 200}, cooldown_s=0)
    cache = await open_cache(config, judge=judge)
    await cache.store("p1", REFUND, answer("3 to 5 days"), ttl_s=60)
    upstream.set(error_status=500)
    assert await cache.lookup("p1", REFUND_PARAPHRASE) is None
    upstream.set(error_status=0, latency_s=1.0)
    started = time.perf_counter()
    assert await cache.lookup("p1", REFUND_PARAPHRASE) is None
    assert time.perf_counter() - started < 0.9
    assert cache.stats["judge_errors"] == 2


async def test_a_judge_takes_a_free_slot_of_its_provider_and_never_queues(open_cache, upstream, provider_for):
    upstream.set(reply="yes")
    targets = provider_for(max_concurrency=1)
    limiter = targets["gpt-4o-mini"].provider.limiter
    cache = await open_cache(local_config(verify={"model": "gpt-4o-mini"}, cooldown_s=30),
                             judge=make_judge(JudgeConfig(model="gpt-4o-mini"), targets))
    await cache.store("p1", REFUND, answer("3 to 5 days"), ttl_s=60)
    held = await limiter.try_acquire()   # a client's request holds the provider's one slot
    assert held is not None
    started = time.perf_counter()
    assert await cache.lookup("p1", REFUND_PARAPHRASE) is None     # no verdict without a slot: a miss
    assert time.perf_counter() - started < 0.5 and limiter.queued == 0
    assert cache.stats["busy"] == 1 and cache.stats["judge_errors"] == 0
    assert upstream.calls_to("/v1/chat/completions") == 0
    held.release()
    hit = await cache.lookup("p1", REFUND_PARAPHRASE)              # not taken for down: no cooldown
    assert hit is not None and upstream.calls_to("/v1/chat/completions") == 1
    assert limiter.in_flight == 0


# ---- failing open: the embedder --------------------------------------------------------------


def openai_config(**overrides: Any) -> SemanticCacheConfig:
    values: dict[str, Any] = {"enabled": True, "embedder": {"kind": "openai", "model": "text-embedding-3-small"},
                              "timeout_ms": 300, "cooldown_s": 0.3}
    values.update(overrides)
    return SemanticCacheConfig.model_validate(values)


async def test_the_openai_embedder_posts_to_the_provider(open_cache, upstream, provider_for):
    config = openai_config()
    cache = await open_cache(config, embedder=make_embedder(config.embedder, provider_for()))
    await cache.store("p1", REFUND, answer("3 to 5 days"), ttl_s=60)
    assert (await cache.lookup("p1", REFUND)).answer == answer("3 to 5 days")
    call = [s for s in upstream.seen if s.path == "/v1/embeddings"][-1]
    assert call.body == {"model": "text-embedding-3-small", "input": [REFUND]}
    assert call.headers["authorization"] == "Bearer sk-test"
    # The lookup reused the vector computed for the store: one probe at open, one text.
    assert upstream.calls_to("/v1/embeddings") == 2


async def test_an_embedder_takes_a_free_slot_of_its_provider_and_never_queues(open_cache, upstream, provider_for):
    config = openai_config(cooldown_s=30)
    targets = provider_for(max_concurrency=1)
    limiter = targets["text-embedding-3-small"].provider.limiter
    cache = await open_cache(config, embedder=make_embedder(config.embedder, targets))
    await cache.store("p1", REFUND, answer("3 to 5 days"), ttl_s=60)
    calls = upstream.calls_to("/v1/embeddings")
    held = await limiter.try_acquire()   # a client's request holds the provider's one slot
    assert held is not None
    assert await cache.lookup("p1", "Do you ship to Canada?") is None
    assert cache.stats["busy"] == 1 and cache.stats["embedder_errors"] == 0 and limiter.queued == 0
    assert upstream.calls_to("/v1/embeddings") == calls
    held.release()
    assert await cache.lookup("p1", "Do you ship to Canada?") is None   # embedded this time: no cooldown
    assert upstream.calls_to("/v1/embeddings") == calls + 1 and limiter.in_flight == 0


async def test_an_embedder_that_is_down_at_open_is_retried_after_its_cooldown(open_cache, upstream, provider_for):
    upstream.set(error_status=503)
    config = openai_config()
    cache = await open_cache(config, embedder=make_embedder(config.embedder, provider_for()))
    assert cache.stats["embedder_errors"] == 1
    assert await cache.lookup("p1", REFUND) is None
    upstream.set(error_status=0)
    await asyncio.sleep(config.cooldown_s + 0.05)
    assert await cache.lookup("p1", REFUND) is None      # starts the setup again, in the background
    deadline = time.monotonic() + 5
    while cache._store is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await cache.store("p1", REFUND, answer("back"), ttl_s=60)
    assert (await cache.lookup("p1", REFUND)).answer == answer("back")


@pytest.mark.parametrize("knobs, what", [
    ({"error_status": 500}, "down"),
    ({"latency_s": 1.0}, "slow"),
    ({"invalid_json": True}, "garbage"),
])
async def test_an_embedder_that_fails_is_a_fast_miss_then_skipped_for_the_cooldown(
        open_cache, upstream, provider_for, knobs, what):
    config = openai_config()
    cache = await open_cache(config, embedder=make_embedder(config.embedder, provider_for()))
    await cache.store("p1", REFUND, answer("3 to 5 days"), ttl_s=60)
    upstream.set(**knobs)
    started = time.perf_counter()
    assert await cache.lookup("p1", "Is there a fee for international transfers?") is None
    assert time.perf_counter() - started < 0.6, what
    assert cache.stats["errors"] == cache.stats["embedder_errors"] == 1
    calls = upstream.calls_to("/v1/embeddings")
    # Cooling down: the embedder is not asked again, the lookup is an instant miss.
    started = time.perf_counter()
    assert await cache.lookup("p1", "Do you ship to Canada?") is None
    assert time.perf_counter() - started < 0.05
    assert upstream.calls_to("/v1/embeddings") == calls
    assert cache.stats["skipped"] >= 1 and cache.stats["errors"] == 1
    # After the cooldown, a healthy embedder is used again (and the stored answer is still there).
    upstream.set(error_status=0, latency_s=0.0, invalid_json=False)
    await asyncio.sleep(config.cooldown_s + 0.05)
    assert (await cache.lookup("p1", REFUND)) is not None


async def test_failures_are_logged_once_per_interval(open_cache, upstream, provider_for, caplog):
    config = openai_config(cooldown_s=0, log_interval_s=60)
    cache = await open_cache(config, embedder=make_embedder(config.embedder, provider_for()))
    upstream.set(error_status=500)
    with caplog.at_level(logging.WARNING, logger="gateway.cache.semantic"):
        for i in range(5):
            assert await cache.lookup("p1", f"question {i}") is None
    assert cache.stats["embedder_errors"] == 5
    assert len([r for r in caplog.records if "embedder failed" in r.getMessage()]) == 1


# ---- failing open: Qdrant --------------------------------------------------------------------


@dataclass
class StandInQdrant:
    """Speaks enough of Qdrant's REST API for the cache to set up, then answers queries slowly or
    with garbage, as told."""

    query_delay_s: float = 0.0
    garbage: bool = False
    port: int = field(default_factory=free_port)
    queries: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        path, ok = request.path, {"status": "ok", "time": 0}
        if path == "/":
            return web.json_response({"title": "qdrant", "version": "1.20.0"})
        if path.endswith("/exists"):
            return web.json_response({"result": {"exists": False}, **ok})
        if path.endswith("/points/query"):
            self.queries += 1
            await asyncio.sleep(self.query_delay_s)
            if self.garbage:
                return web.json_response({"result": {"points": "not points"}, **ok})
            return web.json_response({"result": {"points": []}, **ok})
        if request.method == "PUT" and path.count("/") == 2:  # create the collection
            return web.json_response({"result": True, **ok})
        return web.json_response({"result": {"operation_id": 1, "status": "completed"}, **ok})


@pytest.fixture
async def stand_in_qdrant() -> AsyncIterator[StandInQdrant]:
    server = StandInQdrant()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", server.port).start()
    yield server
    await runner.cleanup()


# The Qdrant drills embed with the fake upstream's embedder: it answers in a millisecond even on a
# busy machine, so every timeout measured here is Qdrant's.


async def test_qdrant_down_is_a_fast_miss(open_cache, provider_for):
    config = openai_config(qdrant={"url": f"http://127.0.0.1:{free_port()}"}, cooldown_s=5)
    cache = await open_cache(config, embedder=make_embedder(config.embedder, provider_for()))
    assert cache.stats["qdrant_errors"] == 1
    started = time.perf_counter()
    assert await cache.lookup("p1", REFUND) is None
    await cache.store("p1", REFUND, answer("lost"), ttl_s=60)
    assert time.perf_counter() - started < 0.1
    assert cache.stats["errors"] == 1 and cache.stats["skipped"] >= 1


@pytest.mark.parametrize("slow", [True, False], ids=["slow", "garbage"])
async def test_a_slow_or_broken_qdrant_is_a_miss_then_skipped_for_the_cooldown(
        open_cache, provider_for, stand_in_qdrant, slow):
    stand_in_qdrant.query_delay_s = 2.0 if slow else 0.0
    stand_in_qdrant.garbage = not slow
    config = openai_config(qdrant={"url": stand_in_qdrant.url}, timeout_ms=300, cooldown_s=0.5)
    cache = await open_cache(config, embedder=make_embedder(config.embedder, provider_for()))
    assert cache._store is not None and cache.stats["errors"] == 0
    started = time.perf_counter()
    assert await cache.lookup("p1", REFUND) is None
    assert time.perf_counter() - started < 1.0
    assert cache.stats["errors"] == cache.stats["qdrant_errors"] == 1
    queries, errors = stand_in_qdrant.queries, cache.stats["errors"]
    assert await cache.lookup("p1", REFUND) is None
    assert stand_in_qdrant.queries == queries and cache.stats["errors"] == errors  # skipped, cooling down
    await asyncio.sleep(config.cooldown_s + 0.05)
    stand_in_qdrant.query_delay_s, stand_in_qdrant.garbage = 0.0, False
    assert await cache.lookup("p1", REFUND) is None          # asked again: an honest empty answer
    assert stand_in_qdrant.queries == queries + 1 and cache.stats["errors"] == errors


async def test_a_collection_of_another_dimension_is_refused_not_mixed(open_cache, upstream, provider_for, tmp_path):
    path = str(tmp_path / "qdrant")
    local = await open_cache(local_config(qdrant={"path": path}))
    await local.store("p1", REFUND, answer("384 dims"), ttl_s=60)
    await local.close()
    config = openai_config(qdrant={"path": path})  # the fake embedder makes 32-dimensional vectors
    other = await open_cache(config, embedder=make_embedder(config.embedder, provider_for()))
    assert other.stats["qdrant_errors"] == 1
    assert await other.lookup("p1", REFUND) is None


def test_make_embedder_and_judge_name_models_that_exist() -> None:
    with pytest.raises(ValueError, match="not under models"):
        make_embedder(EmbedderConfig(kind="openai", model="missing"), {})
    with pytest.raises(ValueError, match="not under models"):
        make_judge(JudgeConfig(model="missing"), {})
    assert make_judge(None, {}) is None
    assert isinstance(make_embedder(EmbedderConfig(kind="local", model="all-MiniLM-L6-v2"), {}), LocalEmbedder)


def test_qdrant_takes_one_place() -> None:
    with pytest.raises(ValueError, match="one of location, path or url"):
        QdrantConfig(path="./data/qdrant", url="http://qdrant:6333")
