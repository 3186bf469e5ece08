"""The request pipeline for /v1/chat/completions and /v1/embeddings.

parse -> authenticate -> resolve the route -> for each target: slot, call, answer or fall back.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .errors import (
    GatewayError, bad_request, too_busy, upstream_invalid, upstream_timeout, upstream_unreachable,
)
from .runtime import Route, Runtime, Target
from .upstream.client import UpstreamFailure
from .upstream.limiter import LimitExceeded
from .upstream.sse import StreamPassthrough, json_headers

# Upstream answers that mean "this target cannot answer now": try the next target, if any.
FALLBACK_STATUSES = frozenset({429, 500, 502, 503, 504})


class UpstreamStatus(GatewayError):
    """An upstream error answer, passed through with its own status and body."""

    def __init__(self, status: int, body: bytes, content_type: str, retry_after: str | None):
        super().__init__(status, "upstream error", headers={"retry-after": retry_after} if retry_after else None)
        self.raw = body
        self.content_type = content_type

    def response(self) -> Response:
        return Response(self.raw, self.status, self.headers, media_type=self.content_type)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


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


def check_embeddings(payload: dict[str, Any]) -> None:
    given = payload.get("input")
    if not isinstance(given, (str, list)) or not given:
        raise bad_request("'input' is required and must be a string or a non-empty array.", "input")


class Pipeline:
    def __init__(self, path: str, check):
        self.path = path
        self.check = check

    async def handle(self, request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime  # read once: a reload swaps it for new requests
        runtime.authenticate(request.headers.get("authorization"))
        payload = parse_json_object(await read_body(request, runtime.max_body_bytes))
        self.check(payload)
        route = runtime.resolve(payload["model"])
        headers = {"x-request-id": request.scope["gateway.request_id"]}
        if not runtime.auth_required:
            client_auth = request.headers.get("authorization")
            if client_auth:
                headers["authorization"] = client_auth
        stream = payload.get("stream") is True and self.path == "/chat/completions"
        return await forward(route, payload, self.path, stream, headers)


async def forward(route: Route, payload: dict[str, Any], path: str, stream: bool,
                  client_headers: dict[str, str]) -> Response:
    last: GatewayError | None = None
    for target in route.targets:
        try:
            return await call_target(route, target, payload, path, stream, client_headers)
        except (UpstreamStatus, _Retryable) as exc:
            last = exc.error if isinstance(exc, _Retryable) else exc
            if isinstance(exc, UpstreamStatus) and exc.status not in FALLBACK_STATUSES:
                raise
    assert last is not None
    raise last


class _Retryable(Exception):
    def __init__(self, error: GatewayError):
        self.error = error


async def call_target(route: Route, target: Target, payload: dict[str, Any], path: str, stream: bool,
                      client_headers: dict[str, str]) -> Response:
    provider = target.provider
    payload["model"] = target.upstream_model
    body = orjson.dumps(payload)
    headers = {**client_headers, **provider.headers}
    try:
        await provider.limiter.acquire()
    except LimitExceeded as exc:
        raise _Retryable(too_busy(provider.name, exc.reason, 1)) from None
    handed_off = False
    try:
        try:
            upstream = await provider.post(path, body, headers)
        except UpstreamFailure as failure:
            raise _Retryable(_failure_error(provider.name, failure, provider.config.timeout_s)) from None
        answer_headers = {"x-gateway-route": route.name, "x-gateway-target": target.model}
        content_type = upstream.headers.get("content-type", "application/json")
        if upstream.status >= 400:
            raw = await provider.read(upstream)
            raise UpstreamStatus(upstream.status, raw, content_type, upstream.headers.get("retry-after"))
        if stream and content_type.startswith("text/event-stream"):
            handed_off = True
            return StreamPassthrough(upstream, json_headers(answer_headers), provider.limiter.release, provider.name)
        try:
            raw = await provider.read(upstream)
        except UpstreamFailure as failure:
            raise _Retryable(_failure_error(provider.name, failure, provider.config.timeout_s)) from None
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _Retryable(upstream_invalid(provider.name, "the body is not JSON")) from None
        return Response(raw, upstream.status, answer_headers, media_type="application/json")
    finally:
        if not handed_off:
            provider.limiter.release()


def _failure_error(provider: str, failure: UpstreamFailure, timeout_s: float) -> GatewayError:
    if failure.kind == "timeout":
        return upstream_timeout(provider, timeout_s)
    if failure.kind == "connect":
        return upstream_unreachable(provider, failure.detail)
    return upstream_invalid(provider, failure.detail)
