"""One call to one target: take a slot, send, and say what came back.

Every model call goes through here: a client's request (`call_target`) and the calls the gateway
makes for itself (`call_for_gateway`: the semantic cache's embedder and judge). Both get the same
failure kinds and hold one of the provider's concurrency slots while they run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import aiohttp
import orjson

from .. import tracing
from ..errors import GatewayError, too_busy, upstream_invalid, upstream_timeout, upstream_unreachable
from ..providers.base import CHAT, Call, Outgoing
from .client import UpstreamFailure
from .limiter import LimitExceeded, Slot
from .request import UpstreamRequest
from .target import Target


@dataclass
class JsonAnswer:
    status: int
    raw: bytes            # the body as the provider sent it
    data: dict[str, Any]  # the same, parsed once
    target: Target


def _no_verdict(completed: bool | None) -> None:
    pass


@dataclass
class StreamAnswer:
    response: aiohttp.ClientResponse   # headers are in; the body is the provider's stream
    chunks: AsyncIterator[bytes]       # that stream as the client's: OpenAI's SSE (the bytes themselves, for
                                       # openai), or the inbound API's events
    target: Target
    release: Callable[[], None]        # frees the provider slot (once, however often called)
    api: Any = None                    # the inbound API (UpstreamRequest.api), None for chat completions
    # What the stream's end says about its target, for the circuit breaker; routing sets it
    # (routing/attempt.py) and the pump calls it once: True (complete), False (broke, timed out,
    # ended before [DONE]), None (the client left first).
    verdict: Callable[[bool | None], None] = _no_verdict


Answer = JsonAnswer | StreamAnswer


class UpstreamStatus(GatewayError):
    """An upstream error answer, passed through with its own status and body."""

    def __init__(self, status: int, body: bytes, content_type: str, retry_after: str | None):
        super().__init__(status, "upstream error", headers={"retry-after": retry_after} if retry_after else None)
        self.raw = body
        self.content_type = content_type
        self.retry_after = retry_after

    @property
    def kind(self) -> str:
        return str(self.status)

    def body(self) -> bytes:
        return self.raw


class TargetCannot(Exception):
    """The target's provider type cannot take this request (a field or an endpoint it has no place
    for): no call was made. A route moves on to its next target; `error` is the 400 to answer
    when no target can."""

    def __init__(self, error: GatewayError):
        super().__init__(error.message)
        self.error = error


class TargetFailed(Exception):
    """The target gave no answer: `kind` is timeout, connect, invalid, queue_full or queue_timeout."""

    def __init__(self, kind: str, error: GatewayError):
        super().__init__(error.message)
        self.kind = kind
        self.error = error


async def call_target(target: Target, request: UpstreamRequest) -> Answer:
    """A client's request to one target, after a wait in the provider's queue if its slots are
    taken. Raises UpstreamStatus for an upstream error answer, TargetFailed when there is none,
    and TargetCannot when the target's provider type has no place for the request (no call made)."""
    provider = target.provider
    record = request.record
    span = tracing.attempt(record.trace, target)   # None when tracing is off
    # Built before the wait: a field the provider cannot take is known at once.
    try:
        outgoing, native = _outgoing(target, request, tracing.headers(span, request.headers))
    except GatewayError as exc:
        if exc.code not in ("unsupported_parameter", "unsupported_endpoint"):
            raise   # the request itself is wrong (a malformed part): no target would take it
        tracing.failed(span, "unsupported")
        raise TargetCannot(exc) from None
    queued = time.perf_counter()
    try:
        slot = await provider.limiter.acquire()
    except LimitExceeded as exc:
        record.queue_wait_s += time.perf_counter() - queued  # a queue timeout waited too
        kind = "queue_full" if exc.reason == "queue full" else "queue_timeout"
        tracing.failed(span, kind)
        raise TargetFailed(kind, too_busy(provider.name, exc.reason, 1)) from None
    started = time.perf_counter()
    record.queue_wait_s += started - queued
    try:
        answer = await _send(target, slot, request.path, outgoing, request.stream, request, native)
    except UpstreamStatus as exc:
        tracing.failed(span, str(exc.status), exc.status)
        raise
    except TargetFailed as exc:
        tracing.failed(span, exc.kind)
        raise
    else:
        if isinstance(answer, StreamAnswer):
            tracing.streaming(span, answer.response.status)   # ended with the stream, by tracing.finish
        else:
            tracing.answered(span, answer.status, answer.data)
        return answer
    finally:
        record.upstream_s += time.perf_counter() - started  # a stream: until its headers; the pump adds the rest


def _outgoing(target: Target, request: UpstreamRequest, headers: dict[str, str]) -> tuple[Outgoing, bool]:
    """The request for the target's provider, and whether it goes in the inbound API's own shape:
    a chat completion (or embeddings) request as it is; another inbound API's as it came to a
    provider that speaks it, else in the chat form. `headers`: the request's, with the attempt's
    own `traceparent` when it is traced."""
    adapter, api = target.provider.adapter, request.api
    call = Call(request.path, request.payload, target.upstream_model, target.pricing, request.stream,
                headers, request.ask_usage, request.optional)
    if api is None:
        return adapter.request(call), False
    if api.ENDPOINT in adapter.native and not (request.guard is not None and request.stream and not api.GUARDS_OWN_STREAM):
        return adapter.native_request(api.ENDPOINT, call), True
    call.path, call.payload = CHAT, api.to_chat(request.payload, adapter.type)
    return adapter.request(call), False


async def call_native(target: Target, endpoint: str, payload: dict[str, Any], headers: dict[str, str]) -> JsonAnswer:
    """A request to one of an inbound API's own endpoints (Messages' count_tokens) of a provider
    that has it natively: sent as it came, after a wait for a slot, answered as it came (its
    errors raised as UpstreamStatus in the provider's own shape)."""
    provider = target.provider
    outgoing = provider.adapter.native_request(endpoint, Call(endpoint, payload, target.upstream_model,
                                                              target.pricing, False, headers))
    try:
        slot = await provider.limiter.acquire()
    except LimitExceeded as exc:
        kind = "queue_full" if exc.reason == "queue full" else "queue_timeout"
        raise TargetFailed(kind, too_busy(provider.name, exc.reason, 1)) from None
    try:
        try:
            upstream = await provider.post(outgoing.url, outgoing.body, outgoing.headers)
            raw = await provider.read(upstream)
        except UpstreamFailure as failure:
            raise _failed(provider.name, failure, provider.config.timeout_s) from None
    finally:
        slot.release()
    if upstream.status >= 400:
        raise UpstreamStatus(upstream.status, raw, upstream.headers.get("content-type", "application/json"),
                             upstream.headers.get("retry-after"))
    return JsonAnswer(upstream.status, raw, _json_object(provider.name, raw), target)


class CallFailed(Exception):
    """A call the gateway made for itself got no usable answer. `busy`: the provider had no free
    slot, so no call was made."""

    def __init__(self, message: str, busy: bool = False):
        super().__init__(message)
        self.busy = busy


async def call_for_gateway(target: Target, path: str, payload: dict[str, Any],
                           headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A call the gateway makes for itself (an embedding, a judge's verdict) while a client waits:
    the JSON of its 200 answer, else CallFailed. `headers`: the traced step's `traceparent`.

    It takes one of the provider's slots, like any call, but only a free one: it never queues
    behind client requests, whose own wait it would lengthen.
    """
    provider = target.provider
    try:
        outgoing = provider.adapter.request(Call(path, payload, target.upstream_model, target.pricing, False,
                                                 headers or {}))
    except GatewayError as exc:
        raise CallFailed(f"{provider.name}: {exc.message}") from None
    try:
        slot = await provider.limiter.try_acquire()
    except GatewayError:   # the shared slots cannot be counted and state.on_error says deny
        slot = None
    if slot is None:
        raise CallFailed(f"{provider.name}: no free slot for a call to {path}", busy=True)
    try:
        answer = await _send(target, slot, path, outgoing, False)
    except TargetFailed as exc:
        raise CallFailed(f"{provider.name}: {exc}") from None
    except UpstreamStatus as exc:
        raise CallFailed(f"{provider.name}: {path} answered {exc.status}") from None
    assert isinstance(answer, JsonAnswer)  # not asked to stream
    if answer.status != 200:
        raise CallFailed(f"{provider.name}: {path} answered {answer.status}")
    return answer.data


async def _send(target: Target, slot: Slot, path: str, outgoing: Outgoing, stream: bool,
                request: UpstreamRequest | None = None, native: bool = False) -> Answer:
    """POST with a slot already taken; the slot is released here, or handed to a StreamAnswer.

    A request of an inbound API other than chat (`request.api`) that went as it came (`native`):
    its answer goes back to the client untouched and is read into the chat form for the gateway;
    any other answer is the chat form, written in the API's shape for the client."""
    api = request.api if request is not None else None
    provider = target.provider
    adapter = provider.adapter
    handed_off = False
    try:
        try:
            upstream = await provider.post(outgoing.url, outgoing.body, outgoing.headers)
        except UpstreamFailure as failure:
            raise _failed(provider.name, failure, provider.config.timeout_s) from None
        content_type = upstream.headers.get("content-type", "application/json")
        if upstream.status >= 400:
            raw = await provider.read(upstream)
            retry_after = adapter.retry_after(upstream.status, raw, upstream.headers)
            status = upstream.status
            if not native:
                status, raw, content_type = adapter.error(status, raw, content_type, upstream.headers)
                if api is not None:
                    raw, content_type = api.error_body(status, raw), "application/json"
            raise UpstreamStatus(status, raw, content_type, retry_after)
        if stream and adapter.is_stream(content_type):
            handed_off = True
            if native:
                chunks = upstream.content.iter_any()
            else:
                chunks = adapter.stream(upstream, target.upstream_model)
                if api is not None:
                    if request.guard is not None:
                        chunks = request.guard.stream(chunks)
                    chunks = api.render_stream(chunks, request.payload)
            return StreamAnswer(upstream, chunks, target, slot.release, api)
        try:
            raw = await provider.read(upstream)
        except UpstreamFailure as failure:
            raise _failed(provider.name, failure, provider.config.timeout_s) from None
        data = _json_object(provider.name, raw)
        try:
            if native:   # the client gets the provider's own answer; the gateway reads its chat form
                data = api.completion(data, target.upstream_model)
            elif adapter.translates:
                data = adapter.answer(path, data, target.upstream_model)
                raw = orjson.dumps(data)
        except ValueError as exc:
            raise TargetFailed("invalid", upstream_invalid(provider.name, str(exc))) from None
        if api is not None and not native:
            raw = api.render(data, request.payload)
        return JsonAnswer(upstream.status, raw, data, target)
    finally:
        if not handed_off:
            slot.release()


def _json_object(provider: str, raw: bytes) -> dict[str, Any]:
    """A 200 answer's body, which must be a JSON object (else the target failed: `invalid`)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise TargetFailed("invalid", upstream_invalid(provider, "the body is not JSON"))
    return data


def _failed(provider: str, failure: UpstreamFailure, timeout_s: float) -> TargetFailed:
    if failure.kind == "timeout":
        return TargetFailed("timeout", upstream_timeout(provider, timeout_s))
    if failure.kind == "connect":
        return TargetFailed("connect", upstream_unreachable(provider, failure.detail))
    return TargetFailed("invalid", upstream_invalid(provider, failure.detail))
