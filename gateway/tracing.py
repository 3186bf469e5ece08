"""OpenTelemetry traces of requests, exported over OTLP (README "Tracing").

One SERVER span per request continues the client's W3C `traceparent`. Under it: a span per
cache step and guardrail check, and a CLIENT span per upstream attempt whose own context is
the `traceparent` sent upstream; retries, fallbacks and guardrail verdicts are events on the
request's span. Attributes follow OpenTelemetry's GenAI semantic conventions (`gen_ai.*`),
plus the gateway's own (`gateway.*`). Message content goes in only with `content=True`.

Off, there is no `Tracing` and a request's span (`record.trace`) is None: every function here
takes None and returns at once, so a request pays a few calls and no allocation. Nothing is
attached to the context (contextvars): spans are parented explicitly. Each `Tracing` owns its
TracerProvider (never the global one), so two gateways in one process never share spans.

The SDK and its exporters are imported when a `Tracing` is made: off, they cost no start-up time.
"""

from __future__ import annotations

import asyncio
import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

import orjson
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import __version__
from .guardrails import masked
from .usage import token_counts

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from .record import RequestRecord

# Step and event names (low cardinality: what varies goes in attributes).
CACHE_EXACT = "cache.exact"
CACHE_SEMANTIC = "cache.semantic"
CACHE_EMBEDDING = "cache.embedding"
CACHE_JUDGE = "cache.judge"
GUARDRAILS_INPUT = "guardrails.input"
GUARDRAILS_OUTPUT = "guardrails.output"
# A cache step's outcome, made once: a call site passes these and builds nothing when tracing is off.
HIT = MappingProxyType({"gateway.cache.result": "hit"})
MISS = MappingProxyType({"gateway.cache.result": "miss"})

# `gen_ai.system` / `gen_ai.provider.name` for each provider type (the conventions' well-known
# values). `gen_ai.system` is the older name, still what most backends read; both are set.
SYSTEMS = {"openai": "openai", "azure": "azure.ai.openai", "anthropic": "anthropic",
           "gemini": "gcp.gemini", "bedrock": "aws.bedrock"}
# `gen_ai.operation.name` for each of the gateway's endpoints (RequestRecord.endpoint).
OPERATIONS = {"chat": "chat", "messages": "chat", "responses": "chat", "embeddings": "embeddings",
              "completions": "text_completion"}
# The content event of the GenAI conventions (opt-in), and how much of each side it carries.
CONTENT_EVENT = "gen_ai.client.inference.operation.details"
CONTENT_MAX_CHARS = 64 * 1024

Mask = Callable[[str], str]

# W3C Trace Context, in (a client's traceparent and tracestate) and out (each upstream call's).
# It keeps no state: one serves every Tracing.
PROPAGATOR = TraceContextTextMapPropagator()


def otlp_endpoint(endpoint: str) -> tuple[str, str, bool]:
    """(protocol, where, insecure) for `tracing.endpoint`: `http(s)://host:4318[/base]` is OTLP/HTTP
    to `<base>/v1/traces`, `grpc://host:4317` OTLP/gRPC in plain text, `grpcs://` with TLS.
    ValueError for anything else (the config check can call this: it imports nothing heavy)."""
    parts = urlsplit(endpoint)
    if not parts.hostname:
        raise ValueError(f"tracing.endpoint {endpoint!r} has no host")
    if parts.scheme in ("http", "https"):
        path = parts.path.rstrip("/")
        if not path.endswith("/v1/traces"):
            path += "/v1/traces"
        return "http", urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")), False
    if parts.scheme in ("grpc", "grpcs"):
        if parts.path not in ("", "/"):
            raise ValueError(f"tracing.endpoint {endpoint!r}: an OTLP/gRPC endpoint has no path")
        return "grpc", parts.netloc, parts.scheme == "grpc"
    raise ValueError(f"tracing.endpoint {endpoint!r} must start with http://, https://, grpc:// or grpcs://")


def _exporter(endpoint: str, timeout_s: float) -> "SpanExporter":
    protocol, where, insecure = otlp_endpoint(endpoint)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=where, insecure=insecure, timeout=timeout_s)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=where, timeout=timeout_s)


class Tracing:
    """The gateway's tracer: a TracerProvider of its own, a batch processor exporting over OTLP
    from its own thread, and a ParentBased(TraceIdRatioBased(sample_ratio)) sampler (a client's
    sampled `traceparent` is traced whatever the ratio; one not sampled is not)."""

    def __init__(self, endpoint: str = "http://127.0.0.1:4318", service_name: str = "llm-gateway",
                 sample_ratio: float = 1.0, content: bool = False, *, mask: Mask | None = None,
                 export_timeout_s: float = 10.0):
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        if not 0.0 <= sample_ratio <= 1.0:
            raise ValueError("tracing.sample_ratio must be between 0 and 1")
        self.endpoint = endpoint
        self.content = content   # the pipeline keeps the answer (record.keep_answer) when this is on
        self.mask = mask         # applied to every string of the content, when content is on
        # Shut down by `close` (the runtime's), not at interpreter exit: an atexit hook would keep
        # every provider a test process ever made alive.
        self.provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
                                       resource=Resource.create({"service.name": service_name}),
                                       shutdown_on_exit=False)
        # An export (retries included) gives up after export_timeout_s: a collector that is down
        # costs dropped spans, and `close` at most that long, never a request's time.
        self.provider.add_span_processor(BatchSpanProcessor(_exporter(endpoint, export_timeout_s)))
        self.tracer = self.provider.get_tracer("llm-gateway", __version__)
        self._servers: dict[str, tuple[str, int | None]] = {}   # base_url -> (server.address, server.port)

    def request(self, headers: Mapping[str, str], record: "RequestRecord", path: str,
                method: str = "POST") -> "RequestSpan":
        """The request's server span, a child of the client's `traceparent` (`headers`: lower-case
        names) when it sent a valid one, started when the record was."""
        parent = PROPAGATOR.extract(headers)
        operation = OPERATIONS.get(record.endpoint, record.endpoint)
        span = self.tracer.start_span(f"{method} {path}", parent, SpanKind.SERVER, {
            "http.request.method": method, "url.path": path, "gen_ai.operation.name": operation,
            "gateway.request_id": record.request_id,
        }, start_time=wall_ns(record.started))
        return RequestSpan(self, span, operation)

    def server_address(self, base_url: str) -> tuple[str, int | None]:
        """`server.address` and `server.port` of a provider's base URL, parsed once."""
        found = self._servers.get(base_url)
        if found is None:
            parts = urlsplit(base_url)
            found = self._servers[base_url] = (parts.hostname or "", parts.port)
        return found

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Export what has ended so far (off the event loop: the export is a blocking call)."""
        return await asyncio.to_thread(self.provider.force_flush, int(timeout_s * 1000))

    async def close(self) -> None:
        """Export what is left and stop the export thread."""
        await asyncio.to_thread(self.provider.shutdown)


class RequestSpan:
    """One request's server span, what it started (so that none is left open), and its trace id
    as hex for the log line. A request that was not sampled has a NonRecordingSpan: its context
    still goes upstream (same trace id, not sampled) and nothing else is done for it."""

    __slots__ = ("tracing", "span", "operation", "recording", "trace_id", "context", "children", "last_attempt",
                 "provider_type", "upstream_model")

    def __init__(self, tracing: Tracing, span: Span, operation: str):
        self.tracing = tracing
        self.span = span
        self.operation = operation
        self.recording = span.is_recording()
        context = span.get_span_context()
        self.trace_id = format(context.trace_id, "032x")
        self.context = set_span_in_context(span)   # the parent of what the request starts
        self.children: list[Span] = []
        self.last_attempt: Span | None = None
        self.provider_type: str | None = None   # of the last attempt: gen_ai.system of the request
        self.upstream_model: str | None = None


# ---- steps: the cache's layers, guardrail checks -------------------------------------------------

def step(trace: RequestSpan | None, name: str, attributes: Mapping[str, Any] | None = None,
         parent: Span | None = None) -> Span | None:
    """An INTERNAL span under the request, or under `parent` (another step: the semantic lookup's
    embedding and judge calls), ended by `end`; one left open is ended by `finish`."""
    if trace is None or not trace.recording:
        return None
    context = trace.context if parent is None else set_span_in_context(parent)
    span = trace.tracing.tracer.start_span(name, context, SpanKind.INTERNAL, attributes)
    trace.children.append(span)
    return span


def end(span: Span | None, attributes: Mapping[str, Any] | None = None, error: str | None = None) -> None:
    """End a step (or an attempt): its outcome as attributes, `error` as `error.type` and status."""
    if span is None or not span.is_recording():
        return
    if attributes:
        span.set_attributes(attributes)
    if error is not None:
        span.set_attribute("error.type", error)
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


# ---- upstream attempts -----------------------------------------------------------------------------

def attempt(trace: RequestSpan | None, target: Any, operation: str | None = None) -> Span | None:
    """A CLIENT span for one call to `target` (an upstream.target.Target: not imported, so that
    config.py can use `otlp_endpoint`; queue wait included), named as the GenAI
    conventions say (`chat gpt-4o-mini`). Its context is what `headers` sends upstream. Ended by
    `answered`, `failed`, or (a stream, after `streaming`) by `finish` once the stream is over."""
    if trace is None:
        return None
    if not trace.recording:
        return trace.span   # nothing is recorded, but the trace and its decision still go upstream
    provider = target.provider
    kind = provider.adapter.type
    system = SYSTEMS.get(kind, kind)
    operation = operation or trace.operation
    address, port = trace.tracing.server_address(provider.config.base_url)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation, "gen_ai.system": system, "gen_ai.provider.name": system,
        "gen_ai.request.model": target.upstream_model, "gateway.target": target.model,
        "gateway.provider": provider.name, "server.address": address,
    }
    if port is not None:
        attributes["server.port"] = port
    span = trace.tracing.tracer.start_span(f"{operation} {target.upstream_model}", trace.context,
                                           SpanKind.CLIENT, attributes)
    trace.children.append(span)
    trace.last_attempt = span
    trace.provider_type = system
    trace.upstream_model = target.upstream_model
    return span


def headers(span: RequestSpan | Span | None, base: dict[str, str]) -> dict[str, str]:
    """The headers of a call made under `span` (an attempt, a step): `base` with the span's own
    `traceparent` (and `tracestate`) in place of the client's. `base` itself when tracing is off."""
    if span is None:
        return base
    carrier = dict(base)
    carrier.pop("traceparent", None)
    carrier.pop("tracestate", None)
    PROPAGATOR.inject(carrier, span.context if isinstance(span, RequestSpan) else set_span_in_context(span))
    return carrier


def answered(span: Span | None, status: int, answer: Mapping[str, Any] | None = None) -> None:
    """A JSON answer from upstream (any status; `answer` the parsed chat completion or embeddings
    response): the response's model, id, usage and finish reasons, and the span ended."""
    if span is None or not span.is_recording():
        return
    span.set_attribute("http.response.status_code", status)
    if answer is not None:
        span.set_attributes(_response_attributes(answer))
    if status >= 400:
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR))
    span.end()


def streaming(span: Span | None, status: int) -> None:
    """A stream's headers are in: the span stays open until the stream is over (`finish`)."""
    if span is not None and span.is_recording():
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("gen_ai.request.stream", True)


def failed(span: Span | None, error_type: str, status: int | None = None) -> None:
    """No usable answer: `error_type` is the failure kind (timeout, connect, invalid, queue_full,
    queue_timeout, unsupported) or the upstream's status as a string; `status` when it answered."""
    if span is None or not span.is_recording():
        return
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, error_type))
    span.end()


# ---- events on the request's span ----------------------------------------------------------------------

def event(trace: RequestSpan | None, name: str, attributes: Mapping[str, Any] | None = None) -> None:
    if trace is not None and trace.recording:
        trace.span.add_event(name, attributes)


def retried(trace: RequestSpan | None, target: str, number: int, error_type: str, wait_s: float) -> None:
    """Attempt `number` of `target` failed with `error_type`; the next one follows in `wait_s`."""
    if trace is not None and trace.recording:
        trace.span.add_event("retry", {"gateway.target": target, "gateway.retry.attempt": number,
                                       "error.type": error_type, "gateway.retry.wait_s": wait_s})


def fell_back(trace: RequestSpan | None, target: str, reason: str) -> None:
    """The route moved on past `target` (`reason`: a status, a failure kind, circuit_open, unsupported)."""
    if trace is not None and trace.recording:
        trace.span.add_event("fallback", {"gateway.target": target, "gateway.fallback.reason": reason})


def guardrail(trace: RequestSpan | None, stage: str, rule: str, action: str) -> None:
    """A guardrail rule fired (`stage`: input | output; `action`: mask | block | flag); never the text."""
    if trace is not None and trace.recording:
        trace.span.add_event("guardrail", {"gateway.guardrail.stage": stage, "gateway.guardrail.rule": rule,
                                           "gateway.guardrail.action": action})


# ---- the end of the request --------------------------------------------------------------------------

def trace_id(trace: RequestSpan | None) -> str | None:
    """The request's trace id (32 hex digits) for its log line, None when tracing is off."""
    return None if trace is None else trace.trace_id


def finish(trace: RequestSpan | None, record: "RequestRecord") -> None:
    """After the last byte (the record is complete): the request's attributes, its status from the
    HTTP status (5xx or a broken stream is an error; a 4xx is the client's, left unset, as the
    HTTP conventions say for a server span), the content when asked for, and every span it
    started and left open ended, the streamed attempt with what the stream said. Once."""
    if trace is None or not trace.recording or not trace.span.is_recording():
        return
    ended_ns = time.time_ns() if record.ended is None else wall_ns(record.ended)
    error = record.stream_error or (record.error_kind if record.status >= 400 or record.status == 0 else None)
    hit = record.cache.startswith("hit")
    answer = record.answer
    last = trace.last_attempt
    if last is not None and last.is_recording():   # the stream that answered: over now
        if answer is not None:
            last.set_attributes(_response_attributes(answer))
        elif isinstance(record.usage, dict):
            last.set_attributes(_usage_attributes(record.usage))
        if record.stream_error is not None or record.client_left:
            last.set_attribute("error.type", record.stream_error or "client_left")
            if record.stream_error is not None:
                last.set_status(Status(StatusCode.ERROR, record.stream_error))
        last.end(ended_ns)
    for child in trace.children:
        if child.is_recording():
            child.end(ended_ns)

    span = trace.span
    attributes: dict[str, Any] = {"gateway.cache": record.cache, "gateway.cost_usd": record.cost_usd,
                                  "gen_ai.request.stream": record.stream}
    if record.status:
        attributes["http.response.status_code"] = record.status
    if record.requested_model is not None:
        attributes["gen_ai.request.model"] = record.requested_model
    if record.route is not None:
        attributes["gateway.route"] = record.route
    if record.model is not None:
        attributes["gateway.target"] = record.model
    if 0 < record.status < 400:   # the answer's own model, below, when it names one
        response_model = record.model if hit else trace.upstream_model or record.model
        if response_model is not None:
            attributes["gen_ai.response.model"] = response_model
    if record.provider is not None:
        attributes["gateway.provider"] = record.provider
    if trace.provider_type is not None and not hit:
        attributes["gen_ai.system"] = attributes["gen_ai.provider.name"] = trace.provider_type
    if answer is not None:
        attributes.update(_response_attributes(answer, usage=not hit))
    elif isinstance(record.usage, dict) and not hit:
        attributes.update(_usage_attributes(record.usage))
    if record.cache_bypass is not None:
        attributes["gateway.cache.bypass"] = record.cache_bypass
    if record.similarity is not None:
        attributes["gateway.cache.similarity"] = record.similarity
    if record.retries:
        attributes["gateway.retries"] = record.retries
    if record.fallbacks:
        attributes["gateway.fallbacks"] = record.fallbacks
    if record.client_left:
        attributes["gateway.client_left"] = True
    if error is not None:
        attributes["error.type"] = error
    span.set_attributes(attributes)
    if error is not None and (record.status >= 500 or record.stream_error is not None or record.status == 0):
        span.set_status(Status(StatusCode.ERROR, error))
    tracing = trace.tracing
    if tracing.content:
        span.add_event(CONTENT_EVENT, _content(record, tracing.mask), ended_ns)
    span.end(ended_ns)


def wall_ns(perf: float) -> int:
    """A perf_counter reading (the record's clock) on the spans' clock (ns since the epoch), both
    read now: the two clocks drift apart by microseconds, so the offset is taken at each use."""
    return time.time_ns() - int((time.perf_counter() - perf) * 1e9)


def _response_attributes(answer: Mapping[str, Any], usage: bool = True) -> dict[str, Any]:
    """A chat completion's (or an embeddings response's) GenAI response attributes."""
    found: dict[str, Any] = {}
    model = answer.get("model")
    if isinstance(model, str):
        found["gen_ai.response.model"] = model
    answer_id = answer.get("id")
    if isinstance(answer_id, str):
        found["gen_ai.response.id"] = answer_id
    choices = answer.get("choices")
    if isinstance(choices, list):
        reasons = [c["finish_reason"] for c in choices if isinstance(c, dict) and isinstance(c.get("finish_reason"), str)]
        if reasons:
            found["gen_ai.response.finish_reasons"] = reasons
    if usage and isinstance(answer.get("usage"), dict):
        found.update(_usage_attributes(answer["usage"]))
    return found


def _usage_attributes(usage: dict[str, Any]) -> dict[str, int]:
    prompt, completion, cached = token_counts(usage)
    found = {"gen_ai.usage.input_tokens": prompt, "gen_ai.usage.output_tokens": completion}
    if cached:
        found["gen_ai.usage.cache_read.input_tokens"] = cached
    return found


def _content(record: "RequestRecord", mask: Mask | None) -> dict[str, str]:
    """The messages asked and the answer's messages, as JSON, each string masked first."""
    found = {}
    if record.messages is not None:
        found["gen_ai.input.messages"] = _json(record.messages if mask is None else masked(record.messages, mask))
    answer = record.answer
    if isinstance(answer, dict) and isinstance(answer.get("choices"), list):
        messages = [c.get("message") for c in answer["choices"] if isinstance(c, dict) and c.get("message")]
        found["gen_ai.output.messages"] = _json(messages if mask is None else masked(messages, mask))
    return found


def _json(value: Any) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= CONTENT_MAX_CHARS else text[:CONTENT_MAX_CHARS] + "...(truncated)"
