"""Streaming passthrough: upstream SSE bytes go to the client as they arrive, unparsed."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import aiohttp

from ..errors import error_body

log = logging.getLogger("gateway.stream")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # tell nginx-like proxies in front of us not to buffer
]


def sse_error_event(message: str, type: str = "api_error", code: str | None = "upstream_stream_error") -> bytes:
    return b"data: " + error_body(message, type, code) + b"\n\n"


class StreamPassthrough:
    """An ASGI response that forwards an upstream stream chunk by chunk.

    A client that leaves cancels the upstream read at once: the connection to the provider is
    closed (the provider sees the disconnect) and `on_close` frees the concurrency slot.
    A stream that breaks, times out or ends without `[DONE]` ends with an SSE error event, so the
    client never mistakes a truncated answer for a complete one.
    """

    def __init__(
        self,
        upstream: aiohttp.ClientResponse,
        headers: list[tuple[bytes, bytes]],
        on_close: Callable[[], None],
        provider: str,
    ):
        self.upstream = upstream
        self.headers = SSE_HEADERS + headers
        self.on_close = on_close
        self.provider = provider
        self.completed = False  # saw `[DONE]` and the upstream closed cleanly
        self.client_left = False

    async def __call__(self, scope, receive, send) -> None:
        pump = asyncio.ensure_future(self._pump(send))
        watch = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not pump.done():
                self.client_left = True
                pump.cancel()
                try:
                    await pump
                except asyncio.CancelledError:
                    pass
            if self.completed:
                self.upstream.release()
            else:
                self.upstream.close()  # drop the connection so the provider stops generating
            self.on_close()
        if pump.done() and not pump.cancelled() and pump.exception() is not None:
            exc = pump.exception()
            if not isinstance(exc, OSError):  # OSError: the client went away while we wrote
                log.error("stream from %s failed: %r", self.provider, exc)

    async def _pump(self, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        tail = b""
        error: str | None = None
        try:
            async for chunk in self.upstream.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                tail = chunk[-32:] if len(chunk) >= 32 else (tail + chunk)[-32:]
        except asyncio.TimeoutError:
            error = f"the stream from provider '{self.provider}' timed out"
        except aiohttp.ClientError as exc:
            error = f"the stream from provider '{self.provider}' broke: {type(exc).__name__}"
        if error is None and b"[DONE]" not in tail:
            error = f"the stream from provider '{self.provider}' ended before [DONE]"
        if error is not None:
            await send({"type": "http.response.body", "body": sse_error_event(error), "more_body": True})
        else:
            self.completed = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_for_disconnect(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def json_headers(extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]


