"""gateway/tracing.py on its own: spans made as the pipeline will make them, exported by the real
OTLP exporters to a real receiver on loopback (tests/otlp_receiver.py), decoded and checked. Upstream
calls go to the fake upstream through the real adapter and provider, so the `traceparent` checked is
the one that went over the wire."""

from __future__ import annotations

import sys
import time
import tracemalloc

import opentelemetry.trace
import pytest

from gateway import tracing
from gateway.config import ModelConfig, ProviderConfig
from gateway.record import RequestRecord
from gateway.tracing import Tracing, otlp_endpoint
from gateway.upstream.call import JsonAnswer, StreamAnswer, UpstreamStatus, call_target
from gateway.upstream.client import Provider
from gateway.upstream.request import UpstreamRequest
from gateway.upstream.target import Target

from .otlp_receiver import OtlpGrpcReceiver, OtlpReceiver

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
CHAT = "/v1/chat/completions"
SECRET = "jane.doe@example.com"


@pytest.fixture
def receiver():
    with OtlpReceiver() as started:
        yield started


@pytest.fixture
async def traces(receiver):
    made = Tracing(receiver.endpoint, service_name="gateway-under-test")
    yield made
    await made.close()


@pytest.fixture
async def provider(upstream):
    opened = Provider("fake", ProviderConfig(base_url=upstream.url, api_key="sk-test"))
    opened.open()
    yield opened
    await opened.close()


def target(provider: Provider, name: str = "gpt-4o-mini") -> Target:
    return Target(name, f"vendor-{name}", provider, ModelConfig(provider="fake"))


def payload(text: str = "hello", **extra) -> dict:
    return {"model": "support", "messages": [{"role": "user", "content": text}], **extra}


def parse_traceparent(value: str) -> tuple[str, str, str]:
    version, trace_id, span_id, flags = value.split("-")
    assert version == "00"
    return trace_id, span_id, flags


async def call(trace, target_: Target, record: RequestRecord, body: dict, base: dict[str, str], stream=False):
    """One attempt as call.py will make it: the span, its headers on the wire, its outcome."""
    span = tracing.attempt(trace, target_)
    request = UpstreamRequest(body, "/chat/completions", stream, tracing.headers(span, base), record)
    try:
        answer = await call_target(target_, request)
    except UpstreamStatus as exc:
        tracing.failed(span, str(exc.status), exc.status)
        raise
    if isinstance(answer, StreamAnswer):
        tracing.streaming(span, answer.response.status)
    else:
        tracing.answered(span, answer.status, answer.data)
    return span, answer


async def exported(traces: Tracing, receiver: OtlpReceiver, count: int):
    assert await traces.flush()
    return await receiver.wait(count)


async def test_the_server_span_continues_the_clients_traceparent(traces, receiver):
    headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "vendor=opaque"}
    record = RequestRecord("req-1", "chat")
    trace = traces.request(headers, record, CHAT)
    assert trace.trace_id == CLIENT_TRACE   # what the log line gets
    record.status = 200
    tracing.finish(trace, record)
    tracing.finish(trace, record)   # once: a second call changes nothing
    [span] = await exported(traces, receiver, 1)
    assert (span.name, span.kind) == ("POST /v1/chat/completions", "SERVER")
    assert (span.trace_id, span.parent_span_id, span.trace_state) == (CLIENT_TRACE, CLIENT_SPAN, "vendor=opaque")
    assert span.attributes["gateway.request_id"] == "req-1"
    assert span.attributes["http.request.method"] == "POST" and span.attributes["url.path"] == CHAT
    assert span.resource["service.name"] == "gateway-under-test"
    assert span.scope == "llm-gateway"
    assert span.start_ns <= span.end_ns


async def test_without_a_valid_traceparent_the_request_starts_a_trace(traces, receiver):
    for headers in ({}, {"traceparent": "00-zzzz-yyyy-01"}, {"traceparent": f"00-{'0' * 32}-{CLIENT_SPAN}-01"}):
        record = RequestRecord("req", "chat")
        trace = traces.request(headers, record, CHAT)
        record.status = 200
        tracing.finish(trace, record)
    spans = await exported(traces, receiver, 3)
    assert all(s.parent_span_id == "" for s in spans)
    assert len({s.trace_id for s in spans}) == 3 and CLIENT_TRACE not in {s.trace_id for s in spans}


async def test_steps_and_attempts_hang_under_the_request_and_share_its_trace(traces, receiver, upstream, provider):
    record = RequestRecord("req-2", "chat")
    headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
    trace = traces.request(headers, record, CHAT)

    checked = tracing.step(trace, tracing.GUARDRAILS_INPUT, {"gateway.guardrail.rules": ["pii"]})
    tracing.guardrail(trace, "input", "pii", "mask")
    tracing.end(checked)
    exact = tracing.step(trace, tracing.CACHE_EXACT)
    tracing.end(exact, tracing.MISS)
    semantic = tracing.step(trace, tracing.CACHE_SEMANTIC)
    embedding = tracing.step(trace, tracing.CACHE_EMBEDDING, parent=semantic)
    tracing.end(embedding)
    judge = tracing.step(trace, tracing.CACHE_JUDGE, parent=semantic)
    tracing.end(judge, error="timeout")
    tracing.end(semantic, {**tracing.MISS, "gateway.cache.similarity": 0.71})

    upstream.knobs.error_status, upstream.knobs.error_times = 503, 1
    with pytest.raises(UpstreamStatus):
        await call(trace, target(provider, "gpt-4o"), record, payload(), {"x-request-id": "req-2"})
    tracing.retried(trace, "gpt-4o", 1, "503", 0.25)
    tracing.fell_back(trace, "gpt-4o", "503")
    await call(trace, target(provider, "gpt-4o-mini"), record, payload(), {"x-request-id": "req-2"})
    record.status, record.route, record.model, record.provider = 200, "support", "gpt-4o-mini", "fake"
    record.cache, record.fallbacks = "miss", ["503"]
    tracing.finish(trace, record)

    spans = await exported(traces, receiver, 8)
    assert len(spans) == 8 and {s.trace_id for s in spans} == {CLIENT_TRACE}
    server = receiver.one("POST /v1/chat/completions")
    by_name = {s.name: s for s in spans}
    under_server = ["guardrails.input", "cache.exact", "cache.semantic", "chat vendor-gpt-4o", "chat vendor-gpt-4o-mini"]
    for name in under_server:
        assert by_name[name].parent_span_id == server.span_id, name
        assert server.start_ns <= by_name[name].start_ns <= by_name[name].end_ns <= server.end_ns, name
    for name in ("cache.embedding", "cache.judge"):
        assert by_name[name].parent_span_id == by_name["cache.semantic"].span_id
    assert {by_name[n].kind for n in under_server[:3]} == {"INTERNAL"}
    assert by_name["chat vendor-gpt-4o"].kind == by_name["chat vendor-gpt-4o-mini"].kind == "CLIENT"
    assert by_name["cache.exact"].attributes["gateway.cache.result"] == "miss"
    assert by_name["cache.semantic"].attributes["gateway.cache.similarity"] == pytest.approx(0.71)
    assert (by_name["cache.judge"].status, by_name["cache.judge"].attributes["error.type"]) == ("ERROR", "timeout")

    failed = by_name["chat vendor-gpt-4o"]
    assert failed.status == "ERROR" and failed.attributes["error.type"] == "503"
    assert failed.attributes["http.response.status_code"] == 503
    assert server.event("retry") == {"gateway.target": "gpt-4o", "gateway.retry.attempt": 1, "error.type": "503",
                                     "gateway.retry.wait_s": 0.25}
    assert server.event("fallback") == {"gateway.target": "gpt-4o", "gateway.fallback.reason": "503"}
    assert server.event("guardrail") == {"gateway.guardrail.stage": "input", "gateway.guardrail.rule": "pii",
                                         "gateway.guardrail.action": "mask"}
    assert server.attributes["gateway.fallbacks"] == ["503"] and server.status == "UNSET"


async def test_each_attempt_sends_its_own_traceparent_upstream(traces, receiver, upstream, provider):
    record = RequestRecord("req-3", "chat")
    client = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "vendor=opaque"}
    trace = traces.request(client, record, CHAT)
    base = {"x-request-id": "req-3", **client}   # what the pipeline passes on today
    upstream.knobs.error_status, upstream.knobs.error_times = 429, 1
    with pytest.raises(UpstreamStatus):
        await call(trace, target(provider, "first"), record, payload(), base)
    await call(trace, target(provider, "second"), record, payload(), base)
    record.status = 200
    tracing.finish(trace, record)
    assert base["traceparent"] == client["traceparent"]   # the request's headers are not changed

    spans = await exported(traces, receiver, 3)
    server = receiver.one("POST /v1/chat/completions")
    attempts = {s.name: s for s in spans if s.kind == "CLIENT"}
    sent = [seen.headers for seen in upstream.seen[-2:]]
    for headers, name in zip(sent, ("chat vendor-first", "chat vendor-second")):
        trace_id, span_id, flags = parse_traceparent(headers["traceparent"])
        assert (trace_id, span_id) == (CLIENT_TRACE, attempts[name].span_id)   # the attempt's, not the client's
        assert span_id not in (CLIENT_SPAN, server.span_id)
        assert int(flags, 16) & 1   # sampled
        assert headers["tracestate"] == "vendor=opaque"
        assert headers["x-request-id"] == "req-3"


async def test_genai_attributes_of_a_json_answer(traces, receiver, upstream, provider):
    record = RequestRecord("req-4", "chat")
    trace = traces.request({}, record, CHAT)
    record.requested_model, record.route, record.model, record.provider = "support", "support", "gpt-4o-mini", "fake"
    _, answer = await call(trace, target(provider), record, payload("what is a span", temperature=0), {})
    assert isinstance(answer, JsonAnswer)
    record.status, record.cache, record.cost_usd = 200, "miss", 0.00042
    record.usage, record.answer = answer.data["usage"], answer.data
    tracing.finish(trace, record)

    await exported(traces, receiver, 2)
    server = receiver.one("POST /v1/chat/completions")
    client = receiver.one("chat vendor-gpt-4o-mini")
    usage = answer.data["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert client.attributes["gen_ai.system"] == client.attributes["gen_ai.provider.name"] == "openai"
    assert client.attributes["gen_ai.operation.name"] == "chat"
    assert client.attributes["gen_ai.request.model"] == "vendor-gpt-4o-mini"
    assert client.attributes["gen_ai.response.model"] == answer.data["model"]
    assert client.attributes["gen_ai.response.id"] == answer.data["id"]
    assert client.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert client.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert client.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert client.attributes["server.address"] == "127.0.0.1" and client.attributes["server.port"] == upstream.port
    assert client.attributes["http.response.status_code"] == 200 and client.status == "UNSET"
    assert (client.attributes["gateway.target"], client.attributes["gateway.provider"]) == ("gpt-4o-mini", "fake")

    attrs = server.attributes
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.request.model"] == "support"
    assert attrs["gen_ai.response.model"] == answer.data["model"]
    assert attrs["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert (attrs["gateway.route"], attrs["gateway.cache"], attrs["gateway.target"]) == ("support", "miss", "gpt-4o-mini")
    assert attrs["gateway.cost_usd"] == pytest.approx(0.00042)
    assert attrs["http.response.status_code"] == 200 and attrs["gen_ai.request.stream"] is False
    assert server.status == "UNSET" and "error.type" not in attrs


async def test_a_cache_hit_names_no_tokens_spent(traces, receiver):
    record = RequestRecord("req-5", "chat")
    trace = traces.request({}, record, CHAT)
    tracing.end(tracing.step(trace, tracing.CACHE_EXACT), tracing.HIT)
    record.status, record.cache, record.model = 200, "hit-exact", "gpt-4o-mini"
    record.answer = {"id": "c-1", "model": "vendor-gpt-4o-mini", "usage": {"prompt_tokens": 9, "completion_tokens": 3},
                     "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}]}
    record.usage = record.answer["usage"]
    tracing.finish(trace, record)
    await exported(traces, receiver, 2)
    attrs = receiver.one("POST /v1/chat/completions").attributes
    assert attrs["gateway.cache"] == "hit-exact" and attrs["gateway.cost_usd"] == 0
    assert attrs["gen_ai.response.model"] == "vendor-gpt-4o-mini"
    assert "gen_ai.usage.input_tokens" not in attrs and "gen_ai.system" not in attrs
    assert receiver.one("cache.exact").attributes["gateway.cache.result"] == "hit"


async def test_a_stream_attempt_ends_with_the_stream(traces, receiver, upstream, provider):
    record = RequestRecord("req-6", "chat")
    trace = traces.request({}, record, CHAT)
    span, answer = await call(trace, target(provider), record, payload(stream=True), {}, stream=True)
    assert isinstance(answer, StreamAnswer)
    assert span.is_recording()   # open while the stream flows
    body = await answer.response.read()
    answer.release()
    assert b"[DONE]" in body
    record.ended = time.perf_counter()
    record.stream, record.status, record.usage = True, 200, {"prompt_tokens": 5, "completion_tokens": 7}
    time.sleep(0.02)   # the observer runs later than the last byte: the spans end at the last byte
    tracing.finish(trace, record)

    await exported(traces, receiver, 2)
    client = receiver.one("chat vendor-gpt-4o-mini")
    server = receiver.one("POST /v1/chat/completions")
    assert client.end_ns == server.end_ns and time.time_ns() - server.end_ns > 15_000_000
    assert client.attributes["gen_ai.request.stream"] is True
    assert (client.attributes["gen_ai.usage.input_tokens"], client.attributes["gen_ai.usage.output_tokens"]) == (5, 7)
    assert server.attributes["gen_ai.request.stream"] is True


async def test_status_follows_the_http_status(traces, receiver):
    cases = [(502, "upstream_502", None, "ERROR"), (400, "invalid_request_error", None, "UNSET"),
             (200, None, "broken_stream", "ERROR"), (200, None, None, "UNSET")]
    for status, kind, stream_error, _ in cases:
        record = RequestRecord(f"req-{status}-{stream_error}", "chat")
        trace = traces.request({}, record, CHAT)
        record.status, record.error_kind, record.stream_error = status, kind, stream_error
        tracing.finish(trace, record)
    spans = {s.attributes["gateway.request_id"]: s for s in await exported(traces, receiver, len(cases))}
    for status, kind, stream_error, expected in cases:
        span = spans[f"req-{status}-{stream_error}"]
        assert span.status == expected and span.attributes["http.response.status_code"] == status
        assert span.attributes.get("error.type") == (kind or stream_error)


async def test_no_content_unless_asked(traces, receiver):
    record = RequestRecord("req-7", "chat")
    trace = traces.request({}, record, CHAT)
    record.messages = [{"role": "user", "content": f"mail {SECRET} please"}]
    record.answer = {"model": "m", "choices": [{"finish_reason": "stop", "message": {"role": "assistant",
                                                                                    "content": f"sent to {SECRET}"}}]}
    record.status = 200
    tracing.finish(trace, record)
    [span] = await exported(traces, receiver, 1)
    assert span.events == []
    assert SECRET not in repr(span)


async def test_content_on_is_an_event_masked_by_the_hook(receiver):
    traces = Tracing(receiver.endpoint, content=True, mask=lambda text: text.replace(SECRET, "<EMAIL_1>"))
    try:
        record = RequestRecord("req-8", "chat")
        trace = traces.request({}, record, CHAT)
        record.messages = [{"role": "user", "content": [{"type": "text", "text": f"mail {SECRET}"}]}]
        record.answer = {"choices": [{"finish_reason": "stop", "message": {"role": "assistant",
                                                                           "content": f"sent to {SECRET}"}}]}
        record.status = 200
        tracing.finish(trace, record)
        [span] = await exported(traces, receiver, 1)
    finally:
        await traces.close()
    details = span.event(tracing.CONTENT_EVENT)
    assert details == {
        "gen_ai.input.messages": '[{"role":"user","content":[{"type":"text","text":"mail <EMAIL_1>"}]}]',
        "gen_ai.output.messages": '[{"role":"assistant","content":"sent to <EMAIL_1>"}]',
    }
    assert SECRET not in repr(span)


async def test_sampling_ratio_zero_exports_nothing_and_still_propagates(receiver, upstream, provider):
    traces = Tracing(receiver.endpoint, sample_ratio=0.0)
    try:
        record = RequestRecord("req-9", "chat")
        trace = traces.request({}, record, CHAT)
        assert not trace.recording and len(trace.trace_id) == 32
        assert tracing.step(trace, tracing.CACHE_EXACT) is None
        await call(trace, target(provider), record, payload(), {"x-request-id": "req-9"})
        trace_id, _, flags = parse_traceparent(upstream.seen[-1].headers["traceparent"])
        assert trace_id == trace.trace_id and not int(flags, 16) & 1   # the decision goes upstream too
        tracing.retried(trace, "gpt-4o-mini", 1, "503", 0.1)
        record.status = 200
        tracing.finish(trace, record)

        # ParentBased: a client's unsampled traceparent is not traced; a sampled one is, whatever the ratio.
        unsampled = traces.request({"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"}, record, CHAT)
        tracing.finish(unsampled, record)
        assert await traces.flush()
        time.sleep(0.05)
        assert receiver.snapshot() == [] and receiver.exports == 0
        sampled = traces.request({"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}, record, CHAT)
        tracing.finish(sampled, record)
        [span] = await exported(traces, receiver, 1)
        assert span.trace_id == CLIENT_TRACE
    finally:
        await traces.close()


def test_off_is_none_and_every_helper_takes_it():
    record = RequestRecord("req-10", "chat")
    base = {"x-request-id": "req-10"}
    assert tracing.step(None, tracing.CACHE_EXACT) is None
    assert tracing.attempt(None, object()) is None   # the target is not even looked at
    assert tracing.headers(None, base) is base       # not copied
    tracing.end(None, tracing.HIT)
    tracing.answered(None, 200, {})
    tracing.streaming(None, 200)
    tracing.failed(None, "timeout")
    tracing.event(None, "x")
    tracing.retried(None, "m", 1, "503", 0.0)
    tracing.fell_back(None, "m", "503")
    tracing.guardrail(None, "input", "pii", "mask")
    tracing.finish(None, record)
    assert tracing.trace_id(None) is None
    # The process-wide provider was never set by any Tracing made in these tests.
    assert isinstance(opentelemetry.trace.get_tracer_provider(), opentelemetry.trace.ProxyTracerProvider)


def off_path(record: RequestRecord, base: dict[str, str], trace=None, target_=None) -> None:
    """What one cache-miss request calls, as the wiring sketch has it."""
    exact = tracing.step(trace, tracing.CACHE_EXACT)
    tracing.end(exact, tracing.MISS)
    span = tracing.attempt(trace, target_)
    tracing.headers(span, base)
    tracing.answered(span, 200, None)
    tracing.finish(trace, record)
    tracing.trace_id(trace)


def test_off_path_allocates_nothing():
    record = RequestRecord("req-11", "chat")
    base = {"x-request-id": "req-11"}
    off_path(record, base)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(10_000):
            off_path(record, base)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 1024 and peak - before < 1024   # nothing kept, nothing made on the way

    # Measured, not asserted (the benchmark owns speed): the off path against a bare loop.
    n = 200_000
    started = time.perf_counter()
    for _ in range(n):
        pass
    bare = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(n):
        off_path(record, base)
    spent = time.perf_counter() - started
    print(f"\ntracing off: {(spent - bare) / n * 1e9:.0f} ns per request (7 calls)", file=sys.stderr)   # pytest -s


async def test_on_path_cost_is_reported(receiver, provider):
    """Sampling 1.0 and 0.0, the same calls as above with real spans (measured, not asserted; pytest -s
    shows it). The export thread encodes the spans meanwhile, and holds the GIL while it does."""
    upstream_target = target(provider)
    for ratio in (1.0, 0.0):
        traces = Tracing(receiver.endpoint, sample_ratio=ratio)
        try:
            n = 600   # 1,800 spans: within the batch processor's queue (2,048), none dropped
            base = {"x-request-id": "r"}
            started = time.perf_counter()
            for _ in range(n):
                record = RequestRecord("r", "chat")
                trace = traces.request({}, record, CHAT)
                record.status, record.route, record.model, record.cache = 200, "support", "gpt-4o-mini", "miss"
                record.usage = {"prompt_tokens": 10, "completion_tokens": 20}
                off_path(record, base, trace, upstream_target)
            spent = time.perf_counter() - started
        finally:
            await traces.close()
        print(f"\ntracing on, sample_ratio {ratio}: {spent / n * 1e6:.1f} us per request (3 spans)", file=sys.stderr)
    await receiver.wait(600 * 3)


async def test_grpc_endpoint_exports_over_grpc(upstream, provider):
    with OtlpGrpcReceiver() as grpc_receiver:
        traces = Tracing(grpc_receiver.endpoint)
        try:
            record = RequestRecord("req-12", "chat")
            trace = traces.request({"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}, record, CHAT)
            await call(trace, target(provider), record, payload(), {})
            record.status = 200
            tracing.finish(trace, record)
            assert await traces.flush()
            spans = await grpc_receiver.wait(2)
        finally:
            await traces.close()
    assert {s.trace_id for s in spans} == {CLIENT_TRACE}
    assert {s.kind for s in spans} == {"SERVER", "CLIENT"}


async def test_two_tracings_in_one_process_keep_their_own_spans():
    with OtlpReceiver() as one, OtlpReceiver() as two:
        first, second = Tracing(one.endpoint, service_name="one"), Tracing(two.endpoint, service_name="two")
        try:
            for traces in (first, second, first):
                record = RequestRecord("r", "chat")
                record.status = 200
                tracing.finish(traces.request({}, record, CHAT), record)
            assert await first.flush() and await second.flush()
            assert [s.resource["service.name"] for s in await one.wait(2)] == ["one", "one"]
            assert [s.resource["service.name"] for s in await two.wait(1)] == ["two"]
        finally:
            await first.close()
            await second.close()


async def test_a_collector_that_refuses_never_touches_the_request():
    with OtlpReceiver(status=503) as refusing:
        traces = Tracing(refusing.endpoint, export_timeout_s=1.0)
        record = RequestRecord("r", "chat")
        trace = traces.request({}, record, CHAT)
        record.status = 200
        tracing.finish(trace, record)   # returns at once: the export is the batch thread's
        started = time.perf_counter()
        await traces.close()
        assert refusing.refused >= 1 and refusing.snapshot() == []
        assert time.perf_counter() - started < 5   # retried until export_timeout_s, then dropped


@pytest.mark.parametrize("endpoint, expected", [
    ("http://127.0.0.1:4318", ("http", "http://127.0.0.1:4318/v1/traces", False)),
    ("http://collector:4318/", ("http", "http://collector:4318/v1/traces", False)),
    ("https://otel.example/otlp", ("http", "https://otel.example/otlp/v1/traces", False)),
    ("http://collector:4318/v1/traces", ("http", "http://collector:4318/v1/traces", False)),
    ("grpc://collector:4317", ("grpc", "collector:4317", True)),
    ("grpcs://collector:4317", ("grpc", "collector:4317", False)),
])
def test_endpoints(endpoint, expected):
    assert otlp_endpoint(endpoint) == expected


@pytest.mark.parametrize("endpoint", ["collector:4318", "ftp://collector", "http://", "grpc://collector:4317/v1/traces"])
def test_bad_endpoints_are_refused(endpoint):
    with pytest.raises(ValueError, match="tracing.endpoint"):
        otlp_endpoint(endpoint)
