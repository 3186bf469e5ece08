"""Tracing through the real gateway: a `tracing:` section exports each request's spans over OTLP
to a real receiver (tests/otlp_receiver.py): the server span continues the client's traceparent,
each upstream attempt is a client span whose own traceparent the provider gets, the cache lookup
and fallbacks are in the trace, GenAI attributes are set, and no content is exported by default.
Without a `tracing:` section nothing is traced."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest

from .conftest import base_config, eventually
from .otlp_receiver import OtlpReceiver

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


@pytest.fixture(autouse=True)
def _clear(receiver: OtlpReceiver) -> None:
    receiver.clear()


def traced(upstream: Any, receiver: OtlpReceiver, **tracing: Any) -> dict[str, Any]:
    return base_config(upstream, tracing={"endpoint": receiver.endpoint, **tracing},
                       cache={"cacheable": "always"})


def spans_of(gw: Any, receiver: OtlpReceiver, count: int, servers: int = 1) -> list[Any]:
    """At least `count` spans, `servers` of them the requests' own. A request's span ends after its
    answer has gone out (with the observer), so the export is asked for until it is in."""
    def arrived() -> bool:
        asyncio.run(gw.runtime.tracing.flush())
        spans = receiver.snapshot()
        return len(spans) >= count and sum(s.kind == "SERVER" for s in spans) >= servers

    assert eventually(arrived), [s.name for s in receiver.snapshot()]
    return receiver.snapshot()


def test_a_request_is_a_server_span_continuing_the_clients_trace(start_gateway, upstream, receiver):
    gw = start_gateway(traced(upstream, receiver))
    r = gw.http().post("/v1/chat/completions", headers={"traceparent": TRACEPARENT},
                       json={"model": "support", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    spans = spans_of(gw, receiver, 3)
    server = next(s for s in spans if s.kind == "SERVER")
    attempt = next(s for s in spans if s.kind == "CLIENT")
    exact = next(s for s in spans if s.name == "cache.exact")
    assert server.trace_id == CLIENT_TRACE and server.parent_span_id == CLIENT_PARENT
    assert attempt.parent_span_id == server.span_id and exact.parent_span_id == server.span_id
    assert exact.attributes["gateway.cache.result"] == "miss"
    # The provider got the attempt's own traceparent, not the client's.
    sent = upstream.seen[-1].headers["traceparent"]
    assert sent == f"00-{CLIENT_TRACE}-{attempt.span_id}-01"
    assert attempt.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attempt.attributes["gen_ai.usage.input_tokens"] > 0 and attempt.attributes["gen_ai.usage.output_tokens"] > 0
    assert server.attributes["gateway.route"] == "support" and server.attributes["http.response.status_code"] == 200
    assert not any(e[0] == "gen_ai.client.inference.operation.details" for s in spans for e in s.events)


def test_a_stream_and_a_cache_hit_are_traced(start_gateway, upstream, receiver):
    gw = start_gateway(traced(upstream, receiver))
    body = {"model": "support", "messages": [{"role": "user", "content": "stream me"}], "stream": True}
    assert "data: [DONE]" in gw.http().post("/v1/chat/completions", json=body).text
    assert eventually(lambda: gw.http().post("/v1/chat/completions", json={**body, "stream": False})
                      .headers["x-gateway-cache"] == "hit-exact")
    spans = spans_of(gw, receiver, 4, servers=2)
    attempts = [s for s in spans if s.kind == "CLIENT"]
    assert len(attempts) == 1 and attempts[0].attributes["gen_ai.response.finish_reasons"] == ["stop"]
    servers = [s for s in spans if s.kind == "SERVER"]
    assert {s.attributes.get("gateway.cache") for s in servers} >= {"miss", "hit-exact"}


def test_a_fallback_is_in_the_trace(start_gateway, upstream, receiver):
    cfg = traced(upstream, receiver)
    cfg["routes"]["support"] = {"targets": ["gpt-4o-mini", "gpt-4o"]}
    gw = start_gateway(cfg)
    upstream.set(error_status=429, error_times=1)
    r = gw.http().post("/v1/chat/completions", json={"model": "support", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200 and r.headers["x-gateway-target"] == "gpt-4o"
    spans = spans_of(gw, receiver, 3)
    attempts = sorted((s for s in spans if s.kind == "CLIENT"), key=lambda s: s.start_ns)
    assert [a.attributes["gen_ai.request.model"] for a in attempts] == ["gpt-4o-mini", "gpt-4o"]
    assert attempts[0].status == "ERROR" and attempts[1].status != "ERROR"
    server = next(s for s in spans if s.kind == "SERVER")
    [fallback] = [attrs for name, attrs in server.events if name == "fallback"]
    assert fallback == {"gateway.target": "gpt-4o-mini", "gateway.fallback.reason": "429"}


def test_content_only_when_asked(start_gateway, upstream, receiver):
    gw = start_gateway(traced(upstream, receiver, content=True))
    gw.http().post("/v1/chat/completions", json={"model": "support", "messages": [
        {"role": "user", "content": "hello, I am jo@example.com"}]})
    spans = spans_of(gw, receiver, 3)
    details = [e for s in spans for e in s.events if e[0] == "gen_ai.client.inference.operation.details"]
    assert details and "hello, I am <EMAIL_1>" in str(details[0][1])   # masked as the log masks
    assert "jo@example.com" not in str(details)


def test_without_a_tracing_section_nothing_is_traced(start_gateway, upstream, receiver):
    gw = start_gateway(base_config(upstream))
    assert gw.runtime.tracing is None
    gw.http().post("/v1/chat/completions", headers={"traceparent": TRACEPARENT},
                   json={"model": "support", "messages": [{"role": "user", "content": "hi"}]})
    assert upstream.seen[-1].headers["traceparent"] == TRACEPARENT   # passed on as before
    assert receiver.snapshot() == []


def test_a_retry_is_an_event_of_the_request(start_gateway, upstream, receiver):
    cfg = traced(upstream, receiver)
    cfg["retry"] = {"attempts": 2, "backoff_s": 0.01}
    gw = start_gateway(cfg)
    upstream.set(error_status=503, error_times=1)
    r = gw.http().post("/v1/chat/completions", json={"model": "support", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200
    spans = spans_of(gw, receiver, 3)
    server = next(s for s in spans if s.kind == "SERVER")
    [retry] = [attrs for name, attrs in server.events if name == "retry"]
    assert retry["gateway.target"] == "gpt-4o-mini" and retry["error.type"] == "503"
    assert retry["gateway.retry.attempt"] == 1
    assert len([s for s in spans if s.kind == "CLIENT"]) == 2


def test_the_semantic_lookup_and_its_embedding_are_steps(start_gateway, upstream, receiver):
    cfg = traced(upstream, receiver)
    cfg["cache"] = {"cacheable": "always", "exact": {"max_entries": 1},
                    "semantic": {"enabled": True, "embedder": {"kind": "openai", "model": "text-embedding-3-small"}}}
    cfg["routes"]["support"]["cache"] = {"semantic": True}
    gw = start_gateway(cfg)
    r = gw.http().post("/v1/chat/completions", json={"model": "support", "messages": [
        {"role": "user", "content": "opening hours"}]})
    assert r.status_code == 200
    spans = spans_of(gw, receiver, 4)
    semantic = next(s for s in spans if s.name == "cache.semantic")
    embedding = next(s for s in spans if s.name == "cache.embedding")
    assert embedding.parent_span_id == semantic.span_id and semantic.attributes["gateway.cache.result"] == "miss"
    # The embedder's own call to the provider carries the embedding step's traceparent.
    [embedded] = [s for s in upstream.seen if s.path.endswith("/embeddings") and "traceparent" in s.headers]
    assert embedded.headers["traceparent"].startswith(f"00-{embedding.trace_id}-{embedding.span_id}-")


def test_guardrail_checks_are_steps_naming_what_fired_never_the_text(start_gateway, upstream, receiver):
    cfg = traced(upstream, receiver)
    cfg["guardrails"] = {"pii": {"kind": "pii", "entities": ["email"], "action": "mask"},
                         "no-leaks": {"kind": "pattern", "patterns": ["(?i)internal use only"], "action": "block"}}
    cfg["routes"]["support"]["guardrails"] = {"input": ["pii"], "output": ["no-leaks"]}
    gw = start_gateway(cfg)
    upstream.set(reply="That is internal use only.")
    for stream in (False, True):
        gw.http().post("/v1/chat/completions", json={"model": "support", "stream": stream, "messages": [
            {"role": "user", "content": f"mail jo@example.com ({stream})"}]})
    spans = spans_of(gw, receiver, 10, servers=2)
    servers = {s.span_id for s in spans if s.kind == "SERVER"}
    checks = [s for s in spans if s.name.startswith("guardrails.")]
    assert sorted(s.name for s in checks) == ["guardrails.input"] * 2 + ["guardrails.output"] * 2
    assert all(s.parent_span_id in servers for s in checks)
    for s in checks:
        if s.name == "guardrails.input":
            assert s.attributes["gateway.guardrail.rules"] == ["pii"] and s.attributes["gateway.guardrail.fired"] == ["pii"]
        else:
            assert s.attributes["gateway.guardrail.blocked"] == "no-leaks"
    assert "jo@example.com" not in str([(s.attributes, s.events) for s in spans])
    assert "internal use only" not in str([(s.attributes, s.events) for s in spans]).lower()
