"""Streaming passthrough: upstream SSE bytes go to the client as they arrive, unparsed (from an
OpenAI-compatible provider; another type's adapter hands over its stream as OpenAI's events)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from typing import Any, Awaitable, Callable

import aiohttp

from ..errors import error_body
from ..providers.base import StreamFailed
from ..record import RequestRecord
from .call import StreamAnswer

log = logging.getLogger("gateway.stream")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # tell nginx-like proxies in front of us not to buffer
]

# The usage-only event OpenAI sends before [DONE] when `stream_options.include_usage` is set.
_USAGE_EVENT = re.compile(rb'"choices"\s*:\s*\[\s*\]')

OnEnd = Callable[[bool, list[bytes]], Awaitable[None]]


def sse_error_event(message: str, type: str = "api_error", code: str | None = "upstream_stream_error") -> bytes:
    return b"data: " + error_body(message, type, code) + b"\n\n"


def raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class StreamPassthrough:
    """An ASGI response that forwards an upstream stream chunk by chunk.

    A client that leaves cancels the upstream read at once: the connection to the provider is
    closed (the provider sees the disconnect) and the concurrency slot is freed.
    A stream that breaks, times out or ends without `[DONE]` ends with an SSE error event, so the
    client never mistakes a truncated answer for a complete one, and counts as a failure of its
    target (`answer.verdict`): the circuit breaker learns of it even though the status was 200.

    `strip_usage`: the gateway asked for the usage chunk the client did not; it is kept for the
    gateway's accounting and not forwarded. Every chunk the upstream sent (usage included) is kept
    and handed to `on_end(completed, chunks)` after the client has its last byte.
    """

    def __init__(self, answer: StreamAnswer, headers: dict[str, str], record: RequestRecord,
                 strip_usage: bool, on_end: OnEnd):
        self.answer = answer
        self.headers = SSE_HEADERS + raw_headers(headers)
        self.record = record
        self.strip_usage = strip_usage
        self.on_end = on_end
        self.chunks: list[bytes] = []
        self.completed = False  # saw `[DONE]` and the upstream closed cleanly
        self.judged = False     # the stream's verdict on its target was given

    async def __call__(self, scope, receive, send) -> None:
        started = time.perf_counter()
        pump = asyncio.ensure_future(self._pump(send))
        watch = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not pump.done():
                self.record.client_left = self.record.stream_error != "shutdown"   # else the gateway ended it
                pump.cancel()
                try:
                    await pump
                except asyncio.CancelledError:
                    pass
            if self.completed:
                self.answer.response.release()
            else:
                self.answer.response.close()  # drop the connection so the provider stops generating
            self.record.upstream_s += time.perf_counter() - started
            self.answer.release()
            if not self.judged:  # the client left (or could not be written to) before the end
                self.judge(None)
            if pump.done() and not pump.cancelled() and pump.exception() is not None:
                exc = pump.exception()
                if not isinstance(exc, OSError):  # OSError: the client went away while we wrote
                    log.error("stream from %s failed: %r", self.answer.target.provider.name, exc)
            await run_after(lambda: self.on_end(self.completed, self.chunks))

    async def _pump(self, send) -> None:
        record = self.record
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        keep = self.chunks.append
        carry = b""
        error: str | None = None
        provider = self.answer.target.provider.name
        try:
            async for chunk in self.answer.chunks:
                keep(chunk)
                if self.strip_usage:
                    chunk, carry = _without_usage(carry + chunk)
                    if not chunk:
                        continue
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if record.first_byte_s is None:
                    record.first_byte_s = time.perf_counter()
        except asyncio.TimeoutError:
            error = f"the stream from provider '{provider}' timed out"
            record.error_kind = record.stream_error = "timeout"
            record.upstream_errors.append((provider, "timeout"))
        except aiohttp.ClientError as exc:
            error = f"the stream from provider '{provider}' broke: {type(exc).__name__}"
            record.error_kind = record.stream_error = "broken_stream"
            record.upstream_errors.append((provider, "broken_stream"))
        except StreamFailed as exc:
            error = f"provider '{provider}' ended the stream with an error: {exc}"
            record.error_kind = record.stream_error = "upstream_error"
            record.upstream_errors.append((provider, "broken_stream"))
        api = self.answer.api
        if error is None and not _complete(self.chunks, api):
            error = f"the stream from provider '{provider}' ended before " + \
                ("[DONE]" if api is None else "its end event")
            record.error_kind = record.stream_error = "broken_stream"
            record.upstream_errors.append((provider, "broken_stream"))
        # The verdict goes before the last bytes: a client that sends its next request as soon as
        # it has them never finds this stream still holding a half-open circuit's one trial.
        self.judge(error is None)
        if carry:
            await send({"type": "http.response.body", "body": carry, "more_body": True})
        if error is not None:
            event = sse_error_event(error) if api is None else api.stream_error_event(error, self.chunks)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        else:
            self.completed = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def judge(self, completed: bool | None) -> None:
        self.judged = True
        self.answer.verdict(completed)


def _complete(chunks: list[bytes], api: Any) -> bool:
    """Whether the stream's end is there: `[DONE]` (or the inbound API's own end) in its last bytes."""
    if api is None:
        return b"[DONE]" in b"".join(chunks[-2:])[-32:]
    return api.completed(chunks)


def _without_usage(data: bytes) -> tuple[bytes, bytes]:
    """Complete events minus the usage-only one, and the incomplete rest to carry over."""
    end = data.rfind(b"\n\n")
    if end < 0:
        return b"", data
    complete, rest = data[: end + 2], data[end + 2:]
    if _USAGE_EVENT.search(complete) is None:
        return complete, rest
    events = complete.split(b"\n\n")
    kept = [e for e in events if e and not (_USAGE_EVENT.search(e) and b'"usage"' in e)]
    return b"".join(e + b"\n\n" for e in kept), rest


class ReplayStream:
    """An ASGI response that sends ready-made SSE events (a cache hit, a checked answer)."""

    def __init__(self, events: list[bytes], headers: dict[str, str], record: RequestRecord,
                 after: Callable[[], Any]):
        self.body = b"".join(events)
        self.headers = SSE_HEADERS + raw_headers(headers)
        self.record = record
        self.after = after

    async def __call__(self, scope, receive, send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            await send({"type": "http.response.body", "body": self.body, "more_body": False})
            self.record.first_byte_s = time.perf_counter()
        finally:
            await run_after(self.after)


async def run_after(after: Callable[[], Any]) -> None:
    """Run what must follow a response (cache write, end of a flight, the observer) whatever
    happened while sending it: a flight left open would hold its key."""
    done = after()
    if inspect.isawaitable(done):
        await done


async def _wait_for_disconnect(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
