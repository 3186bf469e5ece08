"""The request pipeline for /v1/chat/completions and /v1/embeddings.

parse -> authenticate -> resolve the route -> cache (exact, semantic, single-flight)
      -> forward (targets, slots, fallbacks) -> answer (JSON, passthrough stream or replay)
      -> after the last byte: cache write, usage and cost, the observer.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from .cache import CachePlan, Entry
from .cache.coalesce import Flight
from .cache.keys import tenant_of
from .errors import GatewayError, bad_request
from .pricing import cost_usd
from .record import RequestRecord
from .routing import forward
from .runtime import Route, Runtime
from .upstream.call import JsonAnswer, StreamAnswer
from .upstream.sse import ReplayStream, StreamPassthrough, run_after
from .upstream.sse_codec import assemble, tail_usage, to_sse
from .usage import estimate

# Request headers passed on to providers, besides the request id and (sometimes) Authorization.
TRACE_HEADERS = ("traceparent", "tracestate")


async def read_body(request: Request, headers: dict[str, str], limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    receive = request.receive
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def request_headers(scope: dict[str, Any]) -> dict[str, str]:
    """The request's headers as a plain dict, built once (ASGI servers lower-case the names)."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"The request body is larger than the gateway's limit of {limit} bytes.",
                        "invalid_request_error", "request_too_large")


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string.", "model")
    return payload


def check_chat(payload: dict[str, Any]) -> None:
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' is required and must be a non-empty array.", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request(f"messages[{i}] must be an object with a string 'role'.", f"messages[{i}]")
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", "stream")
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.", "stream_options")


def check_embeddings(payload: dict[str, Any]) -> None:
    given = payload.get("input")
    if not isinstance(given, (str, list)) or not given:
        raise bad_request("'input' is required and must be a string or a non-empty array.", "input")


class Pipeline:
    def __init__(self, endpoint: str):
        self.endpoint = endpoint  # "chat" | "embeddings"
        self.path = "/chat/completions" if endpoint == "chat" else "/embeddings"
        self.check = check_chat if endpoint == "chat" else check_embeddings

    async def handle(self, request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime  # read once: a reload swaps it for new requests
        record = RequestRecord(request.scope["gateway.request_id"], self.endpoint)
        record.keep_answer = request.app.state.observer.content
        finish = _finisher(request, record)
        try:
            return await self._run(request, runtime, record, finish)
        except GatewayError as exc:
            record.status = exc.status
            record.error_kind = record.error_kind or exc.code or exc.type
            return Answered(exc.body(), exc.status, exc.headers, finish,
                            getattr(exc, "content_type", "application/json"))

    async def _run(self, request: Request, runtime: Runtime, record: RequestRecord,
                   finish: Callable[[], None]) -> Response:
        headers = request_headers(request.scope)
        client_auth = headers.get("authorization")
        key_name = runtime.authenticate(client_auth)
        payload = parse_json_object(await read_body(request, headers, runtime.max_body_bytes))
        self.check(payload)
        record.messages = payload.get("messages", payload.get("input"))  # logged only with log.content
        route = runtime.resolve(payload["model"], payload, headers)  # rules first: the cache key names the route
        record.route = route.name
        record.tenant = tenant_of(key_name, client_auth)
        upstream_headers = {"x-request-id": record.request_id}
        for name in TRACE_HEADERS:
            if name in headers:
                upstream_headers[name] = headers[name]
        if client_auth and not runtime.auth_required:
            upstream_headers["authorization"] = client_auth
        if self.endpoint != "chat":
            answer = await forward(route, payload, self.path, False, upstream_headers, record)
            assert isinstance(answer, JsonAnswer)
            return self._json(answer, route, record, {}, finish)

        stream = record.stream = payload.get("stream") is True
        include_usage = bool(stream and (payload.get("stream_options") or {}).get("include_usage"))
        plan = runtime.cache.plan(route.name, route.target_models, route.cache, payload, headers, record.tenant)
        if isinstance(plan, str):
            record.extra["cache_bypass"] = plan
            return await self._upstream(runtime, route, payload, upstream_headers, record, finish, None, None)

        cache = runtime.cache
        record.cache = "miss"
        if plan.lookup:
            entry = await cache.get(plan.key)
            record.cache_layers["exact"] = "hit" if entry else "miss"
            if entry is not None:
                return self._hit(entry, "hit-exact", None, route, plan, record, include_usage, finish)
            if plan.partition is not None:
                hit = await cache.lookup_semantic(plan)
                record.cache_layers["semantic"] = "hit" if hit else "miss"
                if hit is not None:
                    entry, semantic_hit = hit
                    record.judge_usage = semantic_hit.judge_usage
                    return self._hit(entry, "hit-semantic", semantic_hit.similarity, route, plan, record,
                                     include_usage, finish)
        flight, shared = await cache.flights.join(plan.key)
        if shared is not None:
            record.coalesced = True
            return self._hit(shared, "hit-exact", None, route, plan, record, include_usage, finish)
        try:
            return await self._upstream(runtime, route, payload, upstream_headers, record, finish, plan, flight)
        except BaseException:
            if flight is not None:
                flight.done(None)  # followers go upstream on their own
            raise

    async def _upstream(self, runtime: Runtime, route: Route, payload: dict[str, Any],
                        upstream_headers: dict[str, str], record: RequestRecord, finish: Callable[[], None],
                        plan: CachePlan | None, flight: Flight | None) -> Response:
        stream = record.stream
        include_usage = bool(stream and (payload.get("stream_options") or {}).get("include_usage"))
        strip_usage = stream and not include_usage
        if strip_usage:  # ask for usage anyway, to count it; the client will not see it
            payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
        answer = await forward(route, payload, self.path, stream, upstream_headers, record)
        cache = runtime.cache
        headers = {"x-gateway-cache": record.cache}
        if plan is not None:
            headers["x-gateway-cache-key"] = plan.key

        if isinstance(answer, StreamAnswer):
            target = answer.target

            async def on_end(completed: bool, chunks: list[bytes]) -> None:
                record.ended = time.perf_counter()
                completion = None
                usage = tail_usage(chunks) if completed and plan is None and not record.keep_answer else None
                if usage is not None and "prompt_tokens" in usage:  # only the usage is needed
                    record.usage = usage
                    record.cost_usd = cost_usd(target.pricing, usage)
                elif completed:
                    try:
                        completion = assemble(chunks)
                    except ValueError:
                        completion = None
                entry = None
                if completion is not None:
                    self._count_usage(record, payload, completion, target)
                    if plan is not None and cache.storable(plan, completion):
                        entry = Entry(target.model, completion)
                record.status = 200
                await _store(cache, plan, flight, entry)
                finish()

            return StreamPassthrough(answer, _answer_headers(route, target.model, headers), record,
                                     strip_usage, on_end)

        data = answer.data
        self._count_usage(record, payload, data, answer.target)
        entry = None
        if plan is not None and answer.status == 200 and cache.storable(plan, data):
            entry = Entry(answer.target.model, data, answer.raw)
        if flight is not None:
            flight.resolve(entry)  # followers have their answer now; the store follows the reply
        after: Callable[[], Any] = finish
        if entry is not None or flight is not None:
            async def store_then_finish() -> None:
                record.ended = time.perf_counter()  # the reply is out; the store is not the client's wait
                await _store(cache, plan, flight, entry)
                finish()

            after = store_then_finish
        if stream:  # the provider answered a stream request with JSON: the client still gets SSE
            record.status = 200
            return ReplayStream(to_sse(data, include_usage), _answer_headers(route, answer.target.model, headers),
                                record, after)
        return self._json(answer, route, record, headers, after)

    def _json(self, answer: JsonAnswer, route: Route, record: RequestRecord, headers: dict[str, str],
              after: Callable[[], Any]) -> Response:
        record.status = answer.status
        if self.endpoint != "chat":
            record.usage = answer.data.get("usage") if isinstance(answer.data.get("usage"), dict) else None
            record.cost_usd = cost_usd(answer.target.pricing, record.usage)
        headers = _answer_headers(route, answer.target.model, headers)
        headers["x-gateway-cost-usd"] = f"{record.cost_usd:.8f}"
        return Answered(answer.raw, answer.status, headers, after)

    def _count_usage(self, record: RequestRecord, payload: dict[str, Any], completion: dict[str, Any],
                     target: Any) -> None:
        usage = completion.get("usage")
        if not isinstance(usage, dict) or "prompt_tokens" not in usage:
            usage = estimate(payload, completion)
            record.usage_estimated = True
        record.usage = usage
        record.cost_usd = cost_usd(target.pricing, usage)
        record.answer = completion

    def _hit(self, entry: Entry, kind: str, similarity: float | None, route: Route, plan: CachePlan,
             record: RequestRecord, include_usage: bool, finish: Callable[[], None]) -> Response:
        completion = entry.completion
        model = entry.model or route.targets[0].model
        record.cache = kind
        record.status = 200
        record.model = record.saved_model = model
        record.similarity = similarity
        record.answer = completion
        usage = completion.get("usage")
        record.usage = usage if isinstance(usage, dict) else None
        headers = _answer_headers(route, model, {"x-gateway-cache": kind, "x-gateway-cache-key": plan.key})
        if similarity is not None:
            headers["x-gateway-similarity"] = f"{similarity:.4f}"
        if record.stream:
            return ReplayStream(to_sse(completion, include_usage), headers, record, finish)
        headers["x-gateway-cost-usd"] = "0.00000000"
        return Answered(entry.body, 200, headers, finish)


class Answered(Response):
    """A whole (non-streamed) answer, and what to do once its last byte is out (no thread hop:
    `after` runs on the event loop, unlike a sync BackgroundTask)."""

    def __init__(self, body: bytes, status: int, headers: dict[str, str], after: Callable[[], Any],
                 media_type: str = "application/json"):
        super().__init__(body, status, headers, media_type=media_type)
        self.after = after

    async def __call__(self, scope, receive, send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self.body})
        finally:
            await run_after(self.after)


async def _store(cache: Any, plan: CachePlan | None, flight: Flight | None, entry: Entry | None) -> None:
    """Store the entry, then end the flight: until the entry can be read, an identical request still
    finds the flight and gets the entry from it, here and (through the lock) on other replicas."""
    if flight is not None:
        flight.resolve(entry)
    try:
        if entry is not None and plan is not None:
            await cache.put(plan, entry)
    finally:
        if flight is not None:
            flight.close()


def _answer_headers(route: Route, target: str, extra: dict[str, str]) -> dict[str, str]:
    return {"x-gateway-route": route.name, "x-gateway-target": target, **extra}


def _finisher(request: Request, record: RequestRecord) -> Callable[[], None]:
    observer = request.app.state.observer

    def finish() -> None:
        if record.ended is None:
            record.ended = time.perf_counter()
        observer.finish(record)

    return finish
