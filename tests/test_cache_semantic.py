"""The semantic layer through the gateway: opt-in per route, single-turn, per tenant, and strict
about near-misses. Real Qdrant (local mode) and the real local MiniLM embedder."""

from __future__ import annotations

import pytest
import yaml

from gateway.app import create_app
from gateway.config import load_config

from .conftest import RunningGateway, base_config, eventually, serve_app

SYSTEM = {"role": "system", "content": "You answer questions for an online shop."}


@pytest.fixture(scope="module")
def semantic_gateway(upstream, tmp_path_factory):
    cfg = base_config(upstream)
    cfg["cache"] = {"semantic": {"enabled": True, "qdrant": {"location": ":memory:"},
                                 "embedder": {"kind": "local", "model": "all-MiniLM-L6-v2"}, "timeout_ms": 5000}}
    cfg["routes"] = {"faq": {"targets": ["gpt-4o-mini"], "cache": {"semantic": True}},
                     "plain": {"targets": ["gpt-4o-mini"]}}
    path = tmp_path_factory.mktemp("semantic") / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    app = create_app(load_config(path))
    server, thread, port = serve_app(app)
    gw = RunningGateway(f"http://127.0.0.1:{port}", app, server, thread, path)
    yield gw
    gw.stop()


def ask(gw, text, route="faq", api_key="sk-client", history=(), stream=False):
    client = gw.client(api_key=api_key)
    messages = [SYSTEM, *history, {"role": "user", "content": text}]
    if stream:
        with client.chat.completions.with_streaming_response.create(
                model=route, messages=messages, temperature=0, stream=True) as raw:
            chunks = list(raw.parse())
            return raw.headers, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    raw = client.chat.completions.with_raw_response.create(model=route, messages=messages, temperature=0)
    return raw.headers, raw.parse().choices[0].message.content


def stored(gw, text, **kw):
    """Ask, and wait until the answer is in the semantic store (it is written after the reply)."""
    stats = gw.runtime.cache.semantic.stats
    before = stats["stores"]
    headers, answer = ask(gw, text, **kw)
    if headers["x-gateway-cache"] == "miss":
        assert eventually(lambda: stats["stores"] > before)
    return headers, answer


def test_a_paraphrase_is_served_the_stored_answer(semantic_gateway, upstream):
    gw = semantic_gateway
    h1, a1 = stored(gw, "I forgot my password, how can I reset it?")
    assert h1["x-gateway-cache"] == "miss"
    h2, a2 = ask(gw, "How do I reset my password?")
    assert h2["x-gateway-cache"] == "hit-semantic", a2
    assert a2 == a1 and 0 < float(h2["x-gateway-similarity"]) <= 1
    h3, streamed = ask(gw, "How do I reset my password?", stream=True)  # a streaming client gets SSE
    assert h3["x-gateway-cache"] == "hit-semantic" and streamed == a1
    assert upstream.calls == 1


@pytest.mark.parametrize("near_miss", [
    "How long does a refund not take to arrive?",
    "How long does a refund take to arrive in 30 days?",
    "How long does a replacement take to arrive?",
])
def test_near_misses_are_not_served(semantic_gateway, upstream, near_miss):
    gw = semantic_gateway
    stored(gw, "How long does a refund take to arrive?")
    headers, answer = ask(gw, near_miss)
    assert headers["x-gateway-cache"] == "miss"
    assert answer == "Echo: " + near_miss


def test_direction_swap_is_not_served(semantic_gateway, upstream):
    gw = semantic_gateway
    stored(gw, "Can I transfer money from PayPal to my bank account?")
    headers, answer = ask(gw, "Can I transfer money from my bank account to PayPal?")
    assert headers["x-gateway-cache"] == "miss"


def test_tenants_never_share_semantic_hits(semantic_gateway, upstream):
    gw = semantic_gateway
    stored(gw, "How much does express shipping cost?", api_key="sk-tenant-a")
    headers, _ = stored(gw, "What is the price of express delivery?", api_key="sk-tenant-b")
    assert headers["x-gateway-cache"] == "miss"
    headers, _ = ask(gw, "What is the price of express delivery?", api_key="sk-tenant-a")
    assert headers["x-gateway-cache"] == "hit-semantic"


def test_semantic_is_opt_in_per_route_and_single_turn(semantic_gateway, upstream):
    gw = semantic_gateway
    ask(gw, "How do I delete my account?", route="plain")
    assert ask(gw, "I want to permanently remove my account, how do I do that?", route="plain")[0]["x-gateway-cache"] == "miss"
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    ask(gw, "How do I track my order?", history=history)
    assert ask(gw, "Is there a tracking number for my order and where do I find it?",
               history=history)[0]["x-gateway-cache"] == "miss"


def test_semantic_entries_and_hits_are_in_the_metrics(semantic_gateway, upstream):
    from prometheus_client.parser import text_string_to_metric_families

    gw = semantic_gateway
    stored(gw, "Where can I download my invoice?")
    ask(gw, "Where can I download my invoice?", api_key="sk-metrics")  # another tenant: a miss
    with gw.http() as http:
        text = http.get("/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("gateway_cache_entries", (("layer", "semantic"),))] >= 1
    assert samples[("gateway_cache_requests_total", (("layer", "semantic"), ("result", "hit")))] >= 1
