"""The end of a graceful shutdown: what is still running when the grace period is up.

On SIGTERM uvicorn stops accepting, closes idle connections and waits for the others, up to its
`timeout_graceful_shutdown` (which `gateway serve` sets a little longer than
`server.shutdown_grace_s`). The drain starts its own clock as uvicorn begins (the server's protocol
calls `begin`, gateway/server.py), and when `shutdown_grace_s` is up it answers for every request
still running, so that no client is left with a connection cut mid-answer:

- a stream (text/event-stream) gets an SSE error event and then the end of its body: the SDKs raise
  it as an error, and nobody takes the truncated answer for a complete one;
- a request with no answer begun gets 503 `shutting_down` (the SDKs retry it, elsewhere), and its
  work is cancelled;
- an answer begun that is not a stream is left alone: it is written whole, at once.

The app's own sends for those are dropped from then on. A stream's record, when the pipeline put it
in the scope (`gateway.record`), gets `stream_error = "shutdown"`: its log line says the stream was
ended at shutdown, not a clean 200. A 503 is counted and logged as an answer of the gateway's own
(`observe_edge`, error `shutting_down`); so are the server's refusals (`observe`, gateway/server.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable

from .errors import error_body

log = logging.getLogger("gateway.drain")

DRAIN = "gateway.drain"      # the lifespan state's key: where the server's protocol finds the drain
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/embeddings": "embeddings", "/v1/messages": "messages",
             "/v1/responses": "responses", "/v1/completions": "completions"}
RECORD = "gateway.record"    # the request scope's key of its RequestRecord

SHUTDOWN_EVENT = b"data: " + error_body(
    "The gateway is shutting down: this stream was ended before the answer was complete.",
    "server_error", "shutting_down") + b"\n\n"
UNAVAILABLE = error_body("The gateway is shutting down; retry the request.", "server_error", "shutting_down")
UNAVAILABLE_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(UNAVAILABLE)).encode()),
                       (b"retry-after", b"1"), (b"connection", b"close")]


class Running:
    """One request in flight, as the drain sees it: what it has sent so far."""

    __slots__ = ("scope", "send_on", "task", "start", "done", "cut", "cancelled")

    def __init__(self, scope: dict[str, Any], send_on: Any, task: asyncio.Task[Any] | None):
        self.scope = scope
        self.send_on = send_on
        self.task = task
        self.start: dict[str, Any] | None = None   # the http.response.start sent
        self.done = False                          # the last body message sent
        self.cut = False                           # the drain answered for it
        self.cancelled = False                     # ...and cancelled its work

    def send(self, message: dict[str, Any]) -> Awaitable[None]:
        # A plain function handing back the server's awaitable: no coroutine of its own per message.
        if self.cut:
            return _sent()  # the drain ended this answer; the app's late sends go nowhere
        if message["type"] == "http.response.start":
            self.start = message
        elif not message.get("more_body", False):
            self.done = True
        return self.send_on(message)

    async def end(self, drain: "Drain") -> str | None:
        """Answer for the request now: "stream" (ended), "waiting" (503) or None (left alone)."""
        start = self.start
        if start is None:
            self.cut = True
            headers = UNAVAILABLE_HEADERS
            rid = self.scope.get("gateway.request_id")
            if rid:
                headers = [*headers, (b"x-request-id", rid.encode("latin-1"))]
            try:
                await self.send_on({"type": "http.response.start", "status": 503, "headers": headers})
                await self.send_on({"type": "http.response.body", "body": UNAVAILABLE})
            finally:
                if self.task is not None and not self.task.done():
                    self.cancelled = True
                    self.task.cancel()   # it waits for an answer nobody can be sent any more
                drain.observe(self.scope, 503, "shutting_down")   # its pipeline will not: it is cancelled
            return "waiting"
        if not _is_stream(start):
            return None
        self.cut = True
        self._mark()
        await self.send_on({"type": "http.response.body", "body": SHUTDOWN_EVENT, "more_body": True})
        await self.send_on({"type": "http.response.body", "body": b"", "more_body": False})
        return "stream"

    def _mark(self) -> None:
        record = self.scope.get(RECORD)
        if record is not None:
            record.stream_error = "shutdown"


class Drain:
    """ASGI wrapper around the gateway's app: knows the requests in flight, and ends those still
    running `grace_s` after `begin`."""

    def __init__(self, app: Any, grace_s: float):
        self.app = app
        self.grace_s = grace_s
        self.running: set[Running] = set()
        self.began = False
        self._timer: asyncio.TimerHandle | None = None
        self._ending: set[asyncio.Task[Any]] = set()

    def __getattr__(self, name: str) -> Any:  # app.state, app.router... of the wrapped app
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and "state" in scope:
                scope["state"][DRAIN] = self  # uvicorn hands this dict to every connection's protocol
            return await self.app(scope, receive, send)
        running = Running(scope, send, asyncio.current_task())
        self.running.add(running)
        try:
            await self.app(scope, receive, running.send)
        except asyncio.CancelledError:
            # Cancelled by the drain alone, after it answered 503: the request is over. Cancelled by
            # anyone else too (uvicorn's own timeout): let it propagate.
            if not running.cancelled or running.task is None or running.task.uncancel() > 0:
                raise
        finally:
            self.running.discard(running)

    def begin(self) -> None:
        """The shutdown began: requests in flight have `grace_s` from now. Called once per
        connection by the server; the first call counts."""
        if self.began:
            return
        self.began = True
        self._timer = asyncio.get_running_loop().call_later(self.grace_s, self._grace_over)

    def _grace_over(self) -> None:
        running = [r for r in self.running if not r.done and not r.cut]
        if running:
            task = asyncio.ensure_future(self._end(running))
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

    async def _end(self, running: list[Running]) -> None:
        # An exception: that client's connection broke meanwhile, and there is nothing left to answer.
        ended = await asyncio.gather(*(r.end(self) for r in running), return_exceptions=True)
        streams, waiting = ended.count("stream"), ended.count("waiting")
        if streams or waiting:
            log.warning("shutting down: the %gs grace period is over; %d streams ended with an error event, "
                        "%d requests still waiting answered 503", self.grace_s, streams, waiting)

    def observe(self, scope: dict[str, Any], status: int, error_kind: str) -> None:
        """Count and log an answer the gateway gave outside its app: a 503 here, the server's 400,
        408 and 431 (their scope has no path when the request did not get as far as its headers)."""
        # Imported here: `gateway serve`'s parent process imports this module (for the server's
        # protocol) and, under --workers N, never serves; the app's modules are the workers' to load.
        from .app import observe_edge

        path = scope.get("path")
        endpoint = ENDPOINTS.get(path, "other") if path is not None else "other"
        shown = f"{scope.get('method')} {path}" if endpoint == "other" and path is not None else None
        observe_edge(self.app, scope, endpoint, status, error_kind, shown)


async def _sent() -> None:
    return None


def _is_stream(start: dict[str, Any]) -> bool:
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-type":
            return value.startswith(b"text/event-stream")
    return False
