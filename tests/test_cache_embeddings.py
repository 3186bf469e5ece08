"""The embeddings cache: each input item cached on its own, only the missing items sent upstream in
one call, the answer put back in input order; float and base64; tenants, `dimensions` and `user`;
usage and cost of a partly cached batch; the request headers and route rules; Redis shared, Redis
holding garbage and Redis stopped mid-way."""

from __future__ import annotations

import base64
import struct
import time
from typing import Any, Iterator

import openai
import orjson
import pytest
import redis
from aiohttp import web

from gateway.cache.embeddings import Item, input_items, item_keys

from .conftest import base_config, eventually
from .fake_upstream import FakeUpstream, fake_embedding
from .test_edge_input import Lines
from .test_metrics import Scrape, scrape

MODEL = "text-embedding-3-small"
DOCS = [f"chunk number {i} of the manual" for i in range(10)]   # 6 tokens each to the fake
CACHED = [0, 1, 2, 4, 5, 7, 9]                                    # 7 of the 10 seen before
MISSING = [3, 6, 8]


class EmbeddingsUpstream(FakeUpstream):
    """The fake upstream, with /v1/embeddings as OpenAI answers it: `encoding_format: base64` gets
    each vector as base64 of little-endian float32, `dimensions` the vector's length, a token array
    is one input. `short_by` drops that many embeddings from the next answer (a broken provider)."""

    short_by = 0

    def reset(self) -> None:
        super().reset()
        self.short_by = 0

    async def embeddings(self, request: web.Request) -> web.Response:
        body, knobs = await self._begin(request)
        error = self._error(knobs)
        if error is not None:
            return error
        given = body["input"]
        inputs = [given] if isinstance(given, str) or isinstance(given[0], int) else given
        dims = body.get("dimensions") or 32
        data = [{"object": "embedding", "index": i, "embedding": encode(vector(x, dims), body.get("encoding_format"))}
                for i, x in enumerate(inputs)]
        if self.short_by:
            data, self.short_by = data[:-self.short_by], 0
        tokens = sum(len(x) if isinstance(x, list) else len(x.split()) for x in inputs)
        out = {"object": "list", "data": data, "model": body["model"],
               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return web.Response(body=orjson.dumps(out), content_type="application/json")


def vector(item: Any, dims: int) -> list[float]:
    return fake_embedding(item if isinstance(item, str) else orjson.dumps(item).decode(), dims)


def encode(vec: list[float], encoding: str | None) -> Any:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
    return vec


@pytest.fixture(scope="module")
def upstream() -> Iterator[EmbeddingsUpstream]:
    fake = EmbeddingsUpstream(name="embeddings").start()
    yield fake
    fake.stop()


def config(upstream: FakeUpstream, **exact: Any) -> dict[str, Any]:
    cfg = base_config(upstream)
    cfg["models"][MODEL]["input_per_1m"] = 1000.0   # a tenth of a cent per token
    if exact:
        cfg["cache"] = {"exact": exact}
    return cfg


def embed(client: openai.OpenAI, given: Any, **kw: Any) -> tuple[Any, Any, dict[str, Any]]:
    """(headers, the SDK's parsed answer, the answer's JSON as sent)."""
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=given, **kw)
    return raw.headers, raw.parse(), orjson.loads(raw.http_response.content)


def sent_inputs(upstream: FakeUpstream) -> list[Any]:
    return [s.body["input"] for s in upstream.seen if s.path == "/v1/embeddings"]


def settled(gw: Any, requests: int) -> Scrape:
    got: list[Scrape] = []
    assert eventually(lambda: got.append(scrape(gw)) or got[-1].value("gateway_requests_total") >= requests)
    return got[-1]


def direct(upstream: FakeUpstream, given: Any, **kw: Any) -> tuple[Any, dict[str, Any]]:
    """What the fake answers without the gateway (no cache): the SDK's parse and the JSON sent."""
    client = openai.OpenAI(base_url=upstream.url, api_key="sk-provider-secret", max_retries=0)
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=given, **kw)
    return raw.parse(), orjson.loads(raw.http_response.content)


# ---- a batch, partly cached --------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["float", "base64", None])   # None: the SDK asks for base64, decodes it
def test_a_batch_of_ten_with_seven_cached_sends_three(start_gateway, upstream, encoding):
    kw = {"encoding_format": encoding} if encoding else {}
    expected, expected_json = direct(upstream, DOCS, **kw)
    upstream.reset()
    gw = start_gateway(config(upstream))
    client = gw.client()
    headers, _, _ = embed(client, [DOCS[i] for i in CACHED], **kw)
    assert headers["x-gateway-cache"] == "miss"

    headers, answer, sent = embed(client, DOCS, **kw)
    assert headers["x-gateway-cache"] == "partial"
    assert sent_inputs(upstream) == [[DOCS[i] for i in CACHED], [DOCS[i] for i in MISSING]]  # 3 sent, in order
    assert [d.index for d in answer.data] == list(range(10))
    assert [d.embedding for d in answer.data] == [d.embedding for d in expected.data]
    assert [d["embedding"] for d in sent["data"]] == [d["embedding"] for d in expected_json["data"]]  # the bytes
    if encoding != "float":
        assert all(isinstance(d["embedding"], str) for d in sent["data"])
        first = struct.unpack("<32f", base64.b64decode(sent["data"][0]["embedding"]))
        assert first == struct.unpack("<32f", struct.pack("<32f", *fake_embedding(DOCS[0])))
    assert answer.usage.prompt_tokens == 3 * 6 and answer.model == MODEL

    headers, again, _ = embed(client, DOCS, **kw)
    assert headers["x-gateway-cache"] == "hit-embeddings" and len(sent_inputs(upstream)) == 2
    assert [d.embedding for d in again.data] == [d.embedding for d in expected.data]
    assert again.usage.prompt_tokens == 0 and float(headers["x-gateway-cost-usd"]) == 0
    assert headers["x-gateway-target"] == MODEL and again.model == MODEL


def test_a_miss_is_passed_through_as_the_provider_sent_it(start_gateway, upstream):
    gw = start_gateway(config(upstream))
    headers, _, sent = embed(gw.client(), DOCS[:3], encoding_format="float")
    assert headers["x-gateway-cache"] == "miss"
    assert upstream.seen[-1].body == {"model": MODEL, "input": DOCS[:3], "encoding_format": "float"}  # untouched
    _, expected = direct(upstream, DOCS[:3], encoding_format="float")
    assert sent == expected


def test_single_inputs_token_arrays_and_duplicates(start_gateway, upstream):
    gw = start_gateway(config(upstream))
    client = gw.client()
    assert embed(client, "one string")[0]["x-gateway-cache"] == "miss"
    assert embed(client, ["one string"])[0]["x-gateway-cache"] == "hit-embeddings"  # the same item
    assert embed(client, [1, 2, 3])[0]["x-gateway-cache"] == "miss"                 # one token array
    headers, answer, _ = embed(client, [[4, 5], [1, 2, 3], "one string"])
    assert headers["x-gateway-cache"] == "partial" and sent_inputs(upstream)[-1] == [[4, 5]]
    assert answer.data[1].embedding == embed(client, [1, 2, 3])[1].data[0].embedding
    # An item given twice is sent once, and answered at both places.
    headers, answer, _ = embed(client, ["dup", "other", "dup"], encoding_format="float")
    assert headers["x-gateway-cache"] == "miss" and sent_inputs(upstream)[-1] == ["dup", "other"]
    assert [d.index for d in answer.data] == [0, 1, 2]
    assert answer.data[0].embedding == answer.data[2].embedding == fake_embedding("dup")
    assert answer.data[1].embedding == fake_embedding("other")


# ---- what is in the key ------------------------------------------------------------------------

def test_a_tenant_never_gets_another_tenants_embeddings(start_gateway, upstream):
    cfg = config(upstream)
    cfg["auth"] = {"keys": [{"name": "team-a", "key": "sk-team-a"}, {"name": "team-b", "key": "sk-team-b"}]}
    gw = start_gateway(cfg)
    a, b = gw.client(api_key="sk-team-a"), gw.client(api_key="sk-team-b")
    embed(a, DOCS)
    headers, answer, _ = embed(b, DOCS)
    assert headers["x-gateway-cache"] == "miss" and sent_inputs(upstream)[-1] == DOCS   # all sent again
    assert embed(b, DOCS)[0]["x-gateway-cache"] == "hit-embeddings"
    assert embed(a, DOCS[:2] + ["new for a"])[0]["x-gateway-cache"] == "partial"
    assert embed(b, ["new for a"])[0]["x-gateway-cache"] == "miss"
    assert len(sent_inputs(upstream)) == 4


def test_client_tokens_are_tenants_without_gateway_keys(start_gateway, upstream):
    gw = start_gateway(config(upstream))
    embed(gw.client(api_key="sk-one"), DOCS[:2])
    assert embed(gw.client(api_key="sk-two"), DOCS[:2])[0]["x-gateway-cache"] == "miss"
    assert embed(gw.client(api_key="sk-one"), DOCS[:2])[0]["x-gateway-cache"] == "hit-embeddings"


def test_dimensions_and_encoding_are_in_the_key_and_user_is_not(start_gateway, upstream):
    gw = start_gateway(config(upstream))
    client = gw.client()
    embed(client, DOCS[:2], encoding_format="float")
    headers, answer, _ = embed(client, DOCS[:2], encoding_format="float", dimensions=8)
    assert headers["x-gateway-cache"] == "miss" and len(answer.data[0].embedding) == 8
    headers, answer, _ = embed(client, DOCS[:2], encoding_format="float", dimensions=8, user="alice")
    assert headers["x-gateway-cache"] == "hit-embeddings" and len(answer.data[0].embedding) == 8
    assert embed(client, DOCS[:2], encoding_format="float", user="bob")[0]["x-gateway-cache"] == "hit-embeddings"
    assert embed(client, DOCS[:2], encoding_format="base64")[0]["x-gateway-cache"] == "miss"  # stored per encoding
    assert embed(client, DOCS[:2])[0]["x-gateway-cache"] == "hit-embeddings"                 # the SDK's base64
    assert len(sent_inputs(upstream)) == 3


def test_the_route_is_in_the_key():
    payload = {"model": MODEL, "input": ["x"]}
    one = item_keys(MODEL, [MODEL], "", payload, "float", ["x"])
    assert one == item_keys(MODEL, [MODEL], "", {**payload, "user": "u", "input": "x"}, "float", ["x"])
    assert one != item_keys("other", [MODEL], "", payload, "float", ["x"])
    assert one != item_keys(MODEL, ["other"], "", payload, "float", ["x"])
    assert one != item_keys(MODEL, [MODEL], "key:a", payload, "float", ["x"])
    assert one != item_keys(MODEL, [MODEL], "", {**payload, "dimensions": 8}, "float", ["x"])
    assert one != item_keys(MODEL, [MODEL], "", payload, "float", ["cafe\u0301"])
    assert item_keys(MODEL, [MODEL], "", payload, "float", ["caf\u00e9"]) != \
        item_keys(MODEL, [MODEL], "", payload, "float", ["cafe\u0301"])   # bytes as given: tokens differ
    assert item_keys(MODEL, [MODEL], "", payload, "float", ["1"]) != \
        item_keys(MODEL, [MODEL], "", payload, "float", [[1]])
    assert input_items("x") == ["x"] and input_items([1, 2]) == [[1, 2]] and input_items([[1], "a"]) == [[1], "a"]
    assert input_items([1, "a"]) is None and input_items([True]) is None and input_items({"a": 1}) is None
    assert Item.unpack(Item("m", "m", b"[1.0]").pack(), check=True) == Item("m", "m", b"[1.0]")
    assert Item.unpack(b'["m","m"]\n[1.0', check=True) is None and Item.unpack(b"junk", check=False) is None


# ---- usage, cost, metrics and the log ------------------------------------------------------------

def test_usage_and_cost_of_a_partly_cached_batch_in_metrics(start_gateway, upstream):
    gw = start_gateway(config(upstream))
    lines = Lines(gw)
    client = gw.client()
    h1, a1, _ = embed(client, [DOCS[i] for i in CACHED])
    h2, a2, _ = embed(client, DOCS)
    h3, a3, _ = embed(client, DOCS)
    assert (a1.usage.prompt_tokens, a2.usage.prompt_tokens, a3.usage.prompt_tokens) == (42, 18, 0)
    assert (h1["x-gateway-cost-usd"], h2["x-gateway-cost-usd"], h3["x-gateway-cost-usd"]) == \
        ("0.04200000", "0.01800000", "0.00000000")

    m = settled(gw, 3)
    assert m.value("gateway_tokens_total", model=MODEL, provider="fake", kind="prompt") == 42 + 18
    assert m.value("gateway_cost_usd_total", model=MODEL, provider="fake") == pytest.approx(0.060, abs=1e-12)
    cache = "gateway_cache_requests_total"
    assert m.value(cache, layer="embeddings", result="hit") == 7 + 10        # per item
    assert m.value(cache, layer="embeddings", result="miss") == 7 + 3
    assert m.value(cache, layer="embeddings", result="bypass") == 0
    assert m.value(cache, layer="embeddings", result="error") == 0
    assert m.value(cache, layer="exact") == 0                                 # chat's layer is not involved
    req = "gateway_requests_total"
    assert m.value(req, route=MODEL, model=MODEL, provider="fake", cache="miss") == 1
    assert m.value(req, route=MODEL, model=MODEL, provider="fake", cache="partial") == 1
    assert m.value(req, route=MODEL, model=MODEL, provider="none", cache="hit-embeddings") == 1
    assert eventually(lambda: scrape(gw).value("gateway_cache_entries", layer="embeddings") == 10)
    assert scrape(gw).value("gateway_cache_entries", layer="exact") == 0

    logged = lines.wait(3)
    assert [line["cache"] for line in logged] == ["miss", "partial", "hit-embeddings"]
    assert [line["prompt_tokens"] for line in logged] == [42, 18, 0]
    assert [line["cost_usd"] for line in logged] == [0.042, 0.018, 0.0]


# ---- the request headers and the route's rules ---------------------------------------------------

def test_no_store_and_no_cache(start_gateway, upstream):
    gw = start_gateway(config(upstream))
    client = gw.client()
    no_store, no_cache = {"Cache-Control": "no-store"}, {"Cache-Control": "no-cache"}
    assert embed(client, DOCS[:3], extra_headers=no_store)[0]["x-gateway-cache"] == "miss"
    assert embed(client, DOCS[:3])[0]["x-gateway-cache"] == "miss"                       # nothing was stored
    assert embed(client, DOCS[:3], extra_headers=no_store)[0]["x-gateway-cache"] == "hit-embeddings"  # looked up
    headers, _, _ = embed(client, DOCS[:4], extra_headers=no_cache)      # skips the lookup, still stores
    assert headers["x-gateway-cache"] == "miss" and sent_inputs(upstream)[-1] == DOCS[:4]
    assert embed(client, DOCS[:4])[0]["x-gateway-cache"] == "hit-embeddings"
    both = {"Cache-Control": "no-cache, no-store"}
    assert embed(client, DOCS[:4], extra_headers=both)[0]["x-gateway-cache"] == "bypass"
    assert len(sent_inputs(upstream)) == 4
    m = settled(gw, 6)
    assert m.value("gateway_cache_requests_total", layer="embeddings", result="bypass") == 4 + 4
    assert m.value("gateway_cache_requests_total", layer="embeddings", result="hit") == 3 + 4


def test_ttl_header_route_cache_off_and_cacheable_never(start_gateway, upstream):
    cfg = config(upstream)
    cfg["routes"]["embed-off"] = {"targets": [MODEL], "cache": False}
    cfg["routes"]["embed-short"] = {"targets": [MODEL], "cache": {"ttl_s": 0.5}}
    gw = start_gateway(cfg)
    client = gw.client()
    for _ in range(2):
        raw = client.embeddings.with_raw_response.create(model="embed-off", input=DOCS[:2])
        assert raw.headers["x-gateway-cache"] == "bypass" and len(raw.parse().data) == 2
    embed(client, ["short-lived"], extra_headers={"x-gateway-cache-ttl": "1"})
    assert embed(client, ["short-lived"])[0]["x-gateway-cache"] == "hit-embeddings"
    client.embeddings.create(model="embed-short", input=["route ttl"])
    assert client.embeddings.with_raw_response.create(model="embed-short", input=["route ttl"]) \
        .headers["x-gateway-cache"] == "hit-embeddings"
    time.sleep(1.1)
    assert embed(client, ["short-lived"])[0]["x-gateway-cache"] == "miss"
    assert client.embeddings.with_raw_response.create(model="embed-short", input=["route ttl"]) \
        .headers["x-gateway-cache"] == "miss"
    with pytest.raises(openai.BadRequestError):
        embed(client, ["x"], extra_headers={"x-gateway-cache-ttl": "soon"})
    m = settled(gw, 9)
    assert m.value("gateway_cache_requests_total", layer="embeddings", result="bypass") == 2 * 2

    never = config(upstream)
    never["cache"] = {"cacheable": "never"}
    gw2 = start_gateway(never)
    for _ in range(2):
        assert embed(gw2.client(), DOCS[:2])[0]["x-gateway-cache"] == "bypass"


def test_an_unknown_encoding_and_odd_inputs_go_upstream_as_they_are(start_gateway, upstream):
    gw = start_gateway(config(upstream))
    with gw.http(headers={"authorization": "Bearer sk-client"}) as http:
        r = http.post("/v1/embeddings", json={"model": MODEL, "input": ["a", "b"], "encoding_format": "float"})
        assert r.status_code == 200 and r.headers["x-gateway-cache"] == "miss"
        upstream.set(error_status=400, error_times=2)   # the provider refuses what it does not know
        r = http.post("/v1/embeddings", json={"model": MODEL, "input": ["a"], "encoding_format": "int8"})
        assert r.status_code == 400 and r.json()["error"]["message"]
        r = http.post("/v1/embeddings", json={"model": MODEL, "input": [1, "a"]})
        assert r.status_code == 400
    assert [s.body["input"] for s in upstream.seen] == [["a", "b"], ["a"], [1, "a"]]


# ---- failures ------------------------------------------------------------------------------------

def test_an_upstream_error_passes_through_and_nothing_is_stored(start_gateway, upstream):
    gw = start_gateway(config(upstream))
    client = gw.client()
    embed(client, DOCS[:5])
    upstream.set(error_status=500, error_times=1)
    with pytest.raises(openai.InternalServerError):
        embed(client, DOCS)
    headers, answer, _ = embed(client, DOCS)
    assert headers["x-gateway-cache"] == "partial" and sent_inputs(upstream)[-1] == DOCS[5:]
    assert [d.embedding for d in answer.data] == [d.embedding for d in direct(upstream, DOCS)[0].data]


def test_an_answer_that_does_not_match_what_was_sent_is_a_502_and_is_counted(start_gateway, upstream):
    gw = start_gateway(config(upstream))
    client = gw.client()
    embed(client, DOCS[:5])
    upstream.short_by = 1
    with pytest.raises(openai.APIStatusError) as caught:
        embed(client, DOCS)
    assert caught.value.status_code == 502 and caught.value.body["code"] == "upstream_error"
    m = settled(gw, 2)
    assert m.value("gateway_tokens_total", model=MODEL, kind="prompt") == 30 + 30   # billed all the same
    assert embed(client, DOCS)[0]["x-gateway-cache"] == "partial"                   # nothing stored from it


# ---- Redis ---------------------------------------------------------------------------------------

def test_redis_shared_by_replicas_and_garbage_is_a_miss(start_gateway, upstream, redis_server):
    cfg = config(upstream, backend="redis", redis_url=redis_server.url, timeout_ms=1000)
    one, two = start_gateway(cfg), start_gateway(cfg)
    embed(one.client(), [DOCS[i] for i in CACHED], encoding_format="base64")
    headers, answer, sent = embed(two.client(), DOCS, encoding_format="base64")
    assert headers["x-gateway-cache"] == "partial" and sent_inputs(upstream)[-1] == [DOCS[i] for i in MISSING]
    assert sent["data"] == direct(upstream, DOCS, encoding_format="base64")[1]["data"]
    assert eventually(lambda: embed(one.client(), DOCS)[0]["x-gateway-cache"] == "hit-embeddings")

    assert len(list(redis.Redis.from_url(redis_server.url).scan_iter("gw:emb:v1:*"))) == 10   # one per item


def test_redis_stopped_mid_way_is_a_miss_and_hits_resume(start_gateway, upstream, redis_server):
    cfg = config(upstream, backend="redis", redis_url=redis_server.url, cooldown_s=0.5, timeout_ms=300)
    gw = start_gateway(cfg)
    client = gw.client()
    embed(client, DOCS[:5])
    assert embed(client, DOCS[:5])[0]["x-gateway-cache"] == "hit-embeddings"
    redis_server.stop()
    started = time.monotonic()
    for _ in range(3):
        headers, answer, _ = embed(client, DOCS)
        assert headers["x-gateway-cache"] == "miss" and len(answer.data) == 10
        assert sent_inputs(upstream)[-1] == DOCS
    assert time.monotonic() - started < 3   # each outage costs at most the short Redis timeout
    assert gw.runtime.cache.embeddings.store.errors >= 1
    m = settled(gw, 5)
    assert m.value("gateway_cache_requests_total", layer="embeddings", result="error") >= 1
    assert m.value("gateway_cache_requests_total", layer="embeddings", result="miss") == 5 + 3 * 10
    redis_server.start()
    time.sleep(0.6)   # the cooldown
    embed(client, DOCS)
    assert eventually(lambda: embed(client, DOCS)[0]["x-gateway-cache"] == "hit-embeddings", timeout=5)


def test_garbage_in_redis_is_a_miss(start_gateway, upstream, redis_server):
    gw = start_gateway(config(upstream, backend="redis", redis_url=redis_server.url, timeout_ms=1000))
    client = gw.client()
    embed(client, DOCS[:3])
    store = redis.Redis.from_url(redis_server.url)
    keys = sorted(store.scan_iter("gw:emb:v1:*"))
    assert len(keys) == 3
    store.set(keys[0], b'["text-embedding-3-small","x"]\n"not base64 and cut')
    store.set(keys[1], b"\x00garbage")
    headers, answer, sent = embed(client, DOCS[:3])
    assert headers["x-gateway-cache"] == "partial" and len(sent_inputs(upstream)[-1]) == 2
    assert [d.embedding for d in answer.data] == [d.embedding for d in direct(upstream, DOCS[:3])[0].data]
    assert gw.runtime.cache.embeddings.store.errors == 2
    assert embed(client, DOCS[:3])[0]["x-gateway-cache"] == "hit-embeddings"
