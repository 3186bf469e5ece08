"""A real OTLP receiver for tests: what a collector does with the gateway's traces, on loopback.

`OtlpReceiver` is OTLP/HTTP (`POST /v1/traces`, a protobuf ExportTraceServiceRequest, plain,
gzip or deflate), strict the way the OpenTelemetry Collector is: another path is 404, another
method 405, another content type 415, a body that does not decode 400. `OtlpGrpcReceiver` is the
same service over OTLP/gRPC (`TraceService/Export`). Both decode with opentelemetry-proto's own
classes and keep every span, flattened (`Received`), for assertions; `status` makes the HTTP one
answer every export with that status instead (a collector that is down or refusing).
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
import zlib
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

from .fake_server import Served

PROTOBUF = "application/x-protobuf"


@dataclass
class Received:
    """One exported span, with ids as hex and values as Python values."""

    name: str
    kind: str                    # SERVER | CLIENT | INTERNAL | PRODUCER | CONSUMER
    trace_id: str                # 32 hex digits
    span_id: str                 # 16 hex digits
    parent_span_id: str          # "" for a root span
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status: str                  # UNSET | OK | ERROR
    status_message: str
    start_ns: int
    end_ns: int
    resource: dict[str, Any]
    scope: str
    trace_state: str = ""

    def event(self, name: str) -> dict[str, Any] | None:
        """The attributes of the first event called `name`, or None."""
        return next((attrs for event_name, attrs in self.events if event_name == name), None)


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return attributes(any_value.kvlist_value.values)
    return getattr(any_value, kind)


def attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


def flatten(request: trace_service_pb2.ExportTraceServiceRequest) -> list[Received]:
    found = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(Received(
                    name=span.name,
                    kind=trace_pb2.Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                    trace_id=span.trace_id.hex(), span_id=span.span_id.hex(), parent_span_id=span.parent_span_id.hex(),
                    attributes=attributes(span.attributes),
                    events=[(e.name, attributes(e.attributes)) for e in span.events],
                    status=trace_pb2.Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                    status_message=span.status.message,
                    start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano,
                    resource=resource, scope=scope_spans.scope.name, trace_state=span.trace_state,
                ))
    return found


@dataclass
class Spans:
    """What a receiver got, safe to read from the test's thread while exports arrive."""

    spans: list[Received] = field(default_factory=list)
    exports: int = 0                                     # export requests decoded
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        received = flatten(request)
        with self._lock:
            self.exports += 1
            self.spans.extend(received)
            self._lock.notify_all()

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.spans)

    def clear(self) -> None:
        with self._lock:
            self.spans.clear()
            self.exports = 0

    def named(self, name: str) -> list[Received]:
        return [s for s in self.snapshot() if s.name == name]

    def one(self, name: str) -> Received:
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {[s.name for s in self.snapshot()]}"
        return found[0]

    def trace(self, trace_id: str) -> list[Received]:
        return [s for s in self.snapshot() if s.trace_id == trace_id]

    async def wait(self, count: int, timeout: float = 10.0) -> list[Received]:
        """At least `count` spans, polled without blocking the caller's event loop."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.snapshot()
            if len(spans) >= count:
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(spans)} spans within {timeout}s, expected {count}: "
                                     f"{[s.name for s in spans]}")
            await asyncio.sleep(0.01)


class OtlpReceiver(Served, Spans):
    """OTLP/HTTP on 127.0.0.1:`port` (a free one when 0), from a thread of its own. `endpoint` is
    what `tracing.endpoint` takes (the exporter adds /v1/traces)."""

    def __init__(self, port: int = 0, status: int = 200):
        Spans.__init__(self)
        self.host = "127.0.0.1"
        self.port = port
        self.name = "otlp"
        self.status = status          # not 200: every export is answered with it (and not kept)
        self.refused = 0              # exports answered with `status`

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "OtlpReceiver":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/v1/traces", self._traces)
        return app

    async def _traces(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.Response(status=405)
        if request.content_type != PROTOBUF:
            return web.Response(status=415, text=f"unsupported content type {request.content_type!r}")
        body = await request.read()
        encoding = request.headers.get("content-encoding", "").lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding not in ("", "identity"):
                return web.Response(status=415, text=f"unsupported content encoding {encoding!r}")
            export = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        except (OSError, zlib.error, DecodeError) as exc:
            return web.Response(status=400, text=f"undecodable export: {exc}")
        if self.status != 200:
            self.refused += 1
            return web.Response(status=self.status)
        self.add(export)
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type=PROTOBUF)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, spans: Spans):
        self.spans = spans

    def Export(self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any):  # noqa: N802 (gRPC's name)
        self.spans.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpGrpcReceiver(Spans):
    """OTLP/gRPC on 127.0.0.1, a free port (grpcio's server, its own threads)."""

    def __init__(self) -> None:
        super().__init__()
        self._server: Any = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def start(self) -> "OtlpGrpcReceiver":
        import grpc

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(10)
            self._server = None

    def __enter__(self) -> "OtlpGrpcReceiver":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
