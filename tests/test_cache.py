"""The exact cache: what is served from it, what is never stored, streams both ways, coalescing,
Redis shared by replicas and Redis failing open."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest
import redis

from gateway.cache.keys import exact_key
from gateway.cache.memory import MemoryStore

from .conftest import base_config, eventually

Q = [{"role": "system", "content": "You answer support questions."},
     {"role": "user", "content": "How long does a refund take?"}]


def cached_config(upstream, **exact):
    cfg = base_config(upstream)
    cfg["cache"] = {"exact": {"backend": "memory", **exact}}
    return cfg


def ask(client, messages=Q, **kw):
    kw.setdefault("temperature", 0)
    raw = client.chat.completions.with_raw_response.create(model="support", messages=messages, **kw)
    return raw.headers, raw.parse()


def stream_text(client, messages=Q, include_usage=False, **kw):
    kw.setdefault("temperature", 0)
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    with client.chat.completions.with_streaming_response.create(
            model="support", messages=messages, stream=True, **extra, **kw) as raw:
        chunks = list(raw.parse())
        headers = raw.headers
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = [c.usage for c in chunks if c.usage]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return headers, text, usage, finish


def test_second_identical_request_is_a_hit(start_gateway, upstream):
    gw = start_gateway(cached_config(upstream))
    client = gw.client()
    h1, a1 = ask(client)
    h2, a2 = ask(client)
    assert h1["x-gateway-cache"] == "miss" and h2["x-gateway-cache"] == "hit-exact"
    assert h1["x-gateway-cache-key"] == h2["x-gateway-cache-key"]
    assert a2.choices[0].message.content == a1.choices[0].message.content
    assert a2.usage == a1.usage                       # replayed usage is the original usage
    assert float(h1["x-gateway-cost-usd"]) > 0 and float(h2["x-gateway-cost-usd"]) == 0
    assert upstream.calls == 1


@pytest.mark.parametrize("change", [
    {"temperature": 0, "max_tokens": 50}, {"temperature": 0, "seed": 7}, {"temperature": 0, "top_p": 0.5},
    {"temperature": 0, "stop": ["\n"]}, {"temperature": 0, "presence_penalty": 0.5},
    {"temperature": 0, "response_format": {"type": "json_object"}},
    {"temperature": 0, "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]},
])
def test_a_changed_parameter_is_a_miss(start_gateway, upstream, change):
    gw = start_gateway(cached_config(upstream))
    client = gw.client()
    ask(client)
    headers, _ = ask(client, **change)
    assert headers["x-gateway-cache"] == "miss"
    assert upstream.calls == 2


def test_changed_messages_model_and_tenant_are_misses(start_gateway, upstream):
    gw = start_gateway(cached_config(upstream))
    client = gw.client()
    ask(client)
    assert ask(client, [Q[0], {"role": "user", "content": "How long does a refund take?", "name": "bob"}])[0]["x-gateway-cache"] == "miss"
    assert ask(client, [{"role": "system", "content": "Be terse."}, Q[1]])[0]["x-gateway-cache"] == "miss"
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=Q, temperature=0)
    assert raw.headers["x-gateway-cache"] == "miss"  # another route, though the same upstream model
    other_tenant = gw.client(api_key="sk-someone-else")
    assert ask(other_tenant)[0]["x-gateway-cache"] == "miss"
    assert ask(other_tenant)[0]["x-gateway-cache"] == "hit-exact"
    assert upstream.calls == 5


def test_temperature_above_zero_bypasses_by_default(start_gateway, upstream):
    gw = start_gateway(cached_config(upstream))
    client = gw.client()
    for _ in range(2):
        headers, _ = ask(client, temperature=0.7)
        assert headers["x-gateway-cache"] == "bypass"
    headers, _ = ask(client, temperature=None)  # no temperature: the provider's default of 1
    assert headers["x-gateway-cache"] == "bypass"
    assert upstream.calls == 3


def test_cacheable_always_and_route_cache_off(start_gateway, upstream):
    cfg = cached_config(upstream)
    cfg["cache"]["cacheable"] = "always"
    cfg["routes"]["chat"] = {"targets": ["gpt-4o-mini"], "cache": False}
    gw = start_gateway(cfg)
    client = gw.client()
    ask(client, temperature=0.7)
    assert ask(client, temperature=0.7)[0]["x-gateway-cache"] == "hit-exact"
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=Q, temperature=0)
        assert raw.headers["x-gateway-cache"] == "bypass"
    assert upstream.calls == 3


def test_n_above_one_is_not_cached(start_gateway, upstream):
    gw = start_gateway(cached_config(upstream))
    client = gw.client()
    assert ask(client, n=2)[0]["x-gateway-cache"] == "bypass"


def test_stream_miss_then_stream_hit(start_gateway, upstream):
    gw = start_gateway(cached_config(upstream))
    client = gw.client()
    h1, t1, u1, f1 = stream_text(client, include_usage=True)
    h2, t2, u2, f2 = stream_text(client, include_usage=True)
    assert (h1["x-gateway-cache"], h2["x-gateway-cache"]) == ("miss", "hit-exact")
    assert t1 == t2 == "Echo: How long does a refund take?"
    assert u1 == u2 and u1[0].total_tokens > 0
    assert f1 == f2 == ["stop"]
    assert h2["content-type"].startswith("text/event-stream")
    assert upstream.calls == 1


def test_stream_miss_then_json_hit_and_back(start_gateway, upstream):
    gw = start_gateway(cached_config(upstream))
    client = gw.client()
    _, streamed, _, _ = stream_text(client)
    headers, answer = ask(client)
    assert headers["x-gateway-cache"] == "hit-exact"
    assert answer.choices[0].message.content == streamed
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.total_tokens > 0             # usage kept though the client never asked for it
    other = [Q[0], {"role": "user", "content": "Where is my parcel?"}]
    _, first = ask(client, other)
    h, text, usage, _ = stream_text(client, other)
    assert h["x-gateway-cache"] == "hit-exact" and text == first.choices[0].message.content
    assert usage == []                               # a hit replays usage only when asked for
    assert upstream.calls == 2


def test_client_that_did_not_ask_for_usage_gets_no_usage_chunk(start_gateway, upstream):
    gw = start_gateway(cached_config(upstream))
    body = {"model": "support", "messages": Q, "stream": True, "temperature": 0}
    with httpx.Client(timeout=10, headers={"authorization": "Bearer sk-client"}) as http:  # the SDK's tenant
        text = http.post(gw.base_url + "/chat/completions", json=body).text
    assert '"usage":{' not in text.replace(" ", "") and text.rstrip().endswith("data: [DONE]")
    assert upstream.seen[-1].body["stream_options"] == {"include_usage": True}  # the gateway asked for it
    headers, answer = ask(gw.client())
    assert answer.usage.total_tokens > 0 and headers["x-gateway-cache"] == "hit-exact"


@pytest.mark.parametrize("knob, stream", [
    ({"broken_after": 2}, True), ({"no_done": True}, True), ({"finish_reason": "length"}, True),
    ({"finish_reason": "length"}, False), ({"error_status": 500}, True), ({"error_status": 500}, False),
    ({"reply": ""}, False), ({"invalid_json": True}, False),
])
def test_broken_truncated_failed_or_empty_answers_are_not_stored(start_gateway, upstream, knob, stream):
    gw = start_gateway(cached_config(upstream))
    client = gw.client()
    upstream.set(**knob)
    try:
        stream_text(client) if stream else ask(client)
    except openai.APIError:
        pass
    upstream.reset()
    headers, _ = ask(client)
    assert headers["x-gateway-cache"] == "miss"
    assert ask(client)[0]["x-gateway-cache"] == "hit-exact"


def test_route_may_opt_in_to_other_finish_reasons(start_gateway, upstream):
    cfg = cached_config(upstream)
    cfg["routes"]["support"]["cache"] = {"finish_reasons": ["stop", "length"]}
    gw = start_gateway(cfg)
    upstream.set(finish_reason="length")
    ask(gw.client())
    assert ask(gw.client())[0]["x-gateway-cache"] == "hit-exact"


def test_cache_control_and_ttl_headers(start_gateway, upstream):
    gw = start_gateway(cached_config(upstream))
    client = gw.client()
    ask(client, extra_headers={"Cache-Control": "no-store"})
    assert ask(client, extra_headers={"Cache-Control": "no-store"})[0]["x-gateway-cache"] == "miss"  # nothing stored
    ask(client)                                                      # stored now
    h, _ = ask(client, extra_headers={"Cache-Control": "no-cache"})  # skips the lookup, stores again
    assert h["x-gateway-cache"] == "miss"
    assert upstream.calls == 4
    short = [Q[0], {"role": "user", "content": "short-lived"}]
    ask(client, short, extra_headers={"x-gateway-cache-ttl": "1"})
    assert ask(client, short)[0]["x-gateway-cache"] == "hit-exact"
    time.sleep(1.1)
    assert ask(client, short)[0]["x-gateway-cache"] == "miss"
    with pytest.raises(openai.BadRequestError):
        ask(client, extra_headers={"x-gateway-cache-ttl": "soon"})


async def _identical_burst(gateways, n, stream=False):
    clients = [gw.async_client(timeout=30) for gw in gateways]

    async def one(i):
        client = clients[i % len(clients)]
        if stream:
            s = await client.chat.completions.create(model="support", messages=Q, temperature=0, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in s if c.choices])
        r = await client.chat.completions.create(model="support", messages=Q, temperature=0)
        return r.choices[0].message.content

    try:
        return await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    finally:
        for c in clients:
            await c.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_identical_concurrent_misses_make_one_upstream_call(start_gateway, upstream, stream):
    gw = start_gateway(cached_config(upstream))
    upstream.set(latency_s=0.3)
    results = await _identical_burst([gw], 20, stream)
    assert results == ["Echo: How long does a refund take?"] * 20
    assert upstream.calls == 1


async def test_identical_misses_across_replicas_sharing_redis(start_gateway, upstream, redis_server):
    # A generous Redis timeout: this test is about coalescing, not about failing open on a busy machine.
    cfg = cached_config(upstream, backend="redis", redis_url=redis_server.url, timeout_ms=1000)
    replicas = [start_gateway(cfg), start_gateway(cfg)]
    upstream.set(latency_s=0.3)
    results = await _identical_burst(replicas, 20)
    assert results == ["Echo: How long does a refund take?"] * 20
    assert upstream.calls == 1
    # And the entry is shared: the other replica answers a later request from Redis.
    assert ask(replicas[1].client())[0]["x-gateway-cache"] == "hit-exact"


async def test_a_failed_leader_releases_its_followers(start_gateway, upstream):
    gw = start_gateway(cached_config(upstream))
    upstream.set(latency_s=0.3, error_status=500, error_times=1)
    results = await _identical_burst([gw], 5)
    assert sum(isinstance(r, openai.InternalServerError) for r in results) == 1
    assert sum(r == "Echo: How long does a refund take?" for r in results) == 4


def test_redis_stopped_mid_test_is_a_miss_and_hits_resume(start_gateway, upstream, redis_server):
    cfg = cached_config(upstream, backend="redis", redis_url=redis_server.url, cooldown_s=0.5, timeout_ms=300)
    gw = start_gateway(cfg)
    client = gw.client()
    ask(client)
    assert ask(client)[0]["x-gateway-cache"] == "hit-exact"
    redis_server.stop()
    started = time.monotonic()
    for _ in range(5):
        headers, answer = ask(client)
        assert headers["x-gateway-cache"] == "miss" and answer.choices[0].message.content
    assert time.monotonic() - started < 3  # each outage costs at most the short Redis timeout
    assert gw.runtime.cache.store.errors >= 1
    redis_server.start()
    time.sleep(0.6)  # the cooldown
    ask(client)
    assert eventually(lambda: ask(client)[0]["x-gateway-cache"] == "hit-exact", timeout=5)


def test_garbage_in_redis_is_a_miss(start_gateway, upstream, redis_server):
    gw = start_gateway(cached_config(upstream, backend="redis", redis_url=redis_server.url, timeout_ms=1000))
    client = gw.client()
    headers, _ = ask(client)
    redis.Redis.from_url(redis_server.url).set(headers["x-gateway-cache-key"], b"\x00not json")
    headers, answer = ask(client)
    assert headers["x-gateway-cache"] == "miss" and answer.choices[0].message.content
    assert ask(client)[0]["x-gateway-cache"] == "hit-exact"


async def test_memory_lru_and_lfu_evict_as_named():
    lru = MemoryStore(max_entries=3, eviction="lru")
    for k in "abc":
        await lru.set(k, k.encode(), 60)
    await lru.get("a")                 # a is now the most recently used
    await lru.set("d", b"d", 60)
    assert [await lru.get(k) for k in "abcd"] == [b"a", None, b"c", b"d"]

    lfu = MemoryStore(max_entries=3, eviction="lfu")
    for k in "abc":
        await lfu.set(k, k.encode(), 60)
    for _ in range(3):
        await lfu.get("a")
        await lfu.get("c")
    await lfu.set("d", b"d", 60)       # b was used least often
    assert [await lfu.get(k) for k in "abcd"] == [b"a", None, b"c", b"d"]

    ttl = MemoryStore(max_entries=3, eviction="lru")
    await ttl.set("x", b"x", 0.05)
    assert await ttl.get("x") == b"x"
    await asyncio.sleep(0.06)
    assert await ttl.get("x") is None and len(ttl) == 0


async def test_memory_entries_are_bytes_until_a_hit_reads_them():
    """Kept as dicts, every stored answer adds its nested objects to each full collection's walk;
    kept as JSON, an entry adds two objects the collector tracks, and reads back equal."""
    import gc

    import orjson

    from gateway.cache.entry import Entry

    def completion(i: int) -> dict:   # each its own objects, as answers from a provider are
        return orjson.loads(orjson.dumps({"id": f"chatcmpl-{i}", "object": "chat.completion", "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Refunds take 5 days."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}))

    store = MemoryStore(max_entries=4000, eviction="lru")
    gc.collect()
    before = len(gc.get_objects())
    for i in range(4000):
        await store.set(f"k{i}", store.pack(Entry("m", completion(i))), 60)
    gc.collect()
    assert len(gc.get_objects()) - before < 3 * 4000     # as dicts: 7 an entry
    entry = store.unpack(await store.get("k7"))
    assert entry.model == "m" and entry.completion == completion(7)
    assert store.unpack(await store.get("k7")).completion is entry.completion   # a hot entry is parsed once


def test_max_entries_through_the_gateway(start_gateway, upstream):
    gw = start_gateway(cached_config(upstream, max_entries=2, eviction="lru"))
    client = gw.client()
    questions = [[{"role": "user", "content": f"question {i}"}] for i in range(3)]
    for q in questions:
        ask(client, q)
    assert ask(client, questions[0])[0]["x-gateway-cache"] == "miss"   # evicted by the third
    assert ask(client, questions[2])[0]["x-gateway-cache"] == "hit-exact"


def test_exact_key_is_canonical():
    base = {"model": "x", "messages": [{"role": "user", "content": "caf\u00e9"}], "temperature": 0}
    same = {"temperature": 0, "messages": [{"content": "cafe\u0301", "role": "user"}], "model": "y",
            "stream": True, "stream_options": {"include_usage": True}, "user": "u1", "metadata": {"a": 1}}
    assert exact_key("r", ["m"], "", base) == exact_key("r", ["m"], "", same)
    assert exact_key("r", ["m"], "", base) != exact_key("r", ["m"], "t", base)
    assert exact_key("r", ["m"], "", base) != exact_key("r2", ["m"], "", base)
    assert exact_key("r", ["m"], "", base) != exact_key("r", ["m", "n"], "", base)
    assert exact_key("r", ["m"], "", base) != exact_key("r", ["m"], "", {**base, "reasoning_effort": "high"})
    tool_turn = {**base, "messages": base["messages"] + [{"role": "tool", "tool_call_id": "1", "content": "42"}]}
    assert exact_key("r", ["m"], "", base) != exact_key("r", ["m"], "", tool_turn)
