"""How `gateway serve` serves HTTP: uvicorn's httptools protocol with limits on what one client
may hold, and the app factory with the shutdown drain around it.

uvicorn bounds none of it: a header value of any size is gathered in memory (httptools joins its
pieces as they come), and a connection that never finishes its headers or its body stays open for
good and holds a graceful shutdown to its end. Here a request's line and headers may take
`max_header_bytes` and `max_headers` (more: 431), must arrive within `header_timeout_s` of the
connection (or of the request's first byte, between requests on one connection) and the body
within `body_timeout_s` of the headers (later: 408). Each refusal is an OpenAI-shaped error, and
the connection is closed after it.

The hot path pays a few attribute checks per chunk read: timers are armed only for a request whose
headers or body did not come whole in one read (and one per new connection).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import ServerConfig, default_config_path, load_config
from .drain import DRAIN, Drain
from .errors import error_body

# After an error answer, what the client still sends is read and dropped for this long before the
# connection closes: closing with unread input makes the kernel reset the connection, and a client
# still sending (a huge header, a body) would never read the answer.
LINGER_S = 2.0

# A connection accepted but with nothing of its request read yet when the shutdown begins (a rolling
# restart takes a new connection in the moment it stops accepting) has this long to send it: that
# one request is served, with `connection: close`. Closing it at once would cut a client that did
# nothing wrong, and one that sends a POST cannot tell whether it was done.
FRESH_WAIT_S = 0.5


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    body_timeout_s: float

    @classmethod
    def of(cls, server: ServerConfig) -> "Limits":
        return cls(server.max_header_bytes, server.max_headers, server.header_timeout_s, server.body_timeout_s)


class Refused(Exception):
    """Raised in a parser callback: the request breaks a limit. httptools wraps it (as the context
    of an HttpParserCallbackError) and stops parsing."""

    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large",
           503: b"Service Unavailable"}


class GatewayProtocol(HttpToolsProtocol):
    """uvicorn's HttpToolsProtocol, with the limits above and a shutdown that also ends requests
    whose body is still on its way (see `shutdown`).

    `gateway serve` passes it to uvicorn as `functools.partial(GatewayProtocol, limits=...)`."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, limits: Limits):
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.max_headers = limits.max_headers   # read for every header
        self.in_headers = True    # the next bytes belong to a request's line and headers
        self.in_body = False      # a request's headers are in, its body is not yet all in
        # Bytes read while in a request's headers, counted by whole reads: their size or more. (A
        # request that begins in the read that ended the one before it, pipelined, is counted from
        # its next read: at worst one read more than the limit.)
        self.header_bytes = 0
        self.header_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.lingering = False
        self.fresh = True         # no request on this connection yet
        self.closing = False      # the shutdown began: the request coming now is the last one

    # ---- the connection -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that sends nothing is held to the same deadline as one that sends slowly.
        self.header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # answered and closing: what comes now is read and dropped
        self._unset_keepalive_if_required()
        if self.in_headers:
            self.header_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.in_body = False
            if self._should_upgrade():
                self._cancel_timers()  # a WebSocket protocol takes the connection over
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, Refused):
                self.refuse(refused.status, refused.message, refused.code)
            else:  # a callback failed for another reason: as uvicorn, a bad request
                self.refuse(400, "Invalid HTTP request received.", "invalid_http")
            return
        except httptools.HttpParserError:
            self.refuse(400, "Invalid HTTP request received.", "invalid_http")
            return
        if self.in_headers:
            if self.header_bytes > self.limits.max_header_bytes:
                self.refuse(431, self._too_large(), "request_header_fields_too_large")
            elif self.header_bytes and self.header_timer is None:  # a request began and its headers are not all in
                self.header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timeout)
        elif self.in_body and self.body_timer is None:
            self.body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timeout)

    # ---- parser callbacks ---------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's, and the count (the whole method, not a super() call: it runs for every header)
        if len(self.headers) >= self.max_headers:
            raise Refused(431, f"The request has more than {self.max_headers} headers.",
                          "request_header_fields_too_large")
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_headers = False
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        limit = self.limits.max_header_bytes
        # Measured only when the reads' count is over the limit (or the request began uncounted).
        if not 0 < self.header_bytes <= limit and self._header_size() > limit:
            raise Refused(431, self._too_large(), "request_header_fields_too_large")
        self.in_body = True
        HttpToolsProtocol.on_headers_complete(self)   # (not super(): a little less work, once per request)
        if self.closing:
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        self.in_body = False
        self.in_headers = True
        self.header_bytes = 0
        self.fresh = False
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        HttpToolsProtocol.on_message_complete(self)

    # ---- limits -------------------------------------------------------------------------------

    def _header_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)  # ": ", CRLF

    def _too_large(self) -> str:
        return f"The request's headers are larger than the gateway's limit of {self.limits.max_header_bytes} bytes."

    def _header_timeout(self) -> None:
        self.header_timer = None
        if self.transport.is_closing() or not self.in_headers:
            return
        if not self.header_bytes:
            self.transport.close()  # nothing of a request came: nobody to answer
            return
        self.refuse(408, f"The request's headers did not arrive within {self.limits.header_timeout_s:g}s.",
                    "request_timeout")

    def _body_timeout(self) -> None:
        self.body_timer = None
        if self.transport.is_closing() or not self.in_body:
            return
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            self.transport.close()  # it was answered without its body (a 401, say): nothing more to say
            return
        self.refuse(408, f"The request body did not arrive within {self.limits.body_timeout_s:g}s of its headers.",
                    "request_timeout", cycle)

    def refuse(self, status: int, message: str, code: str, cycle: Any = None, headers: bytes = b"",
               linger: bool = True) -> None:
        """Answer `status` with an OpenAI-shaped error and close the connection (after lingering, see
        LINGER_S, unless told not to). `cycle`: the request refused, when its headers were in (its
        app, waiting for the body, sees the client gone); else the request never reached the app."""
        self._cancel_timers()
        if self.transport.is_closing():
            return
        running = self.cycle if self.cycle is not None and not self.cycle.response_complete else None
        if running is not None and (running is not cycle or running.response_started):
            self.transport.close()  # an answer is under way on this connection: no status line inside it
            return
        scope: dict[str, Any] = {}
        if cycle is not None:
            cycle.disconnected = True     # the app's receive() says the client left, its send() goes nowhere
            cycle.message_event.set()
            scope = cycle.scope
        rid = scope.get("gateway.request_id") or os.urandom(12).hex()   # the app's id, else one of its kind
        scope["gateway.request_id"] = rid
        body = error_body(message, "invalid_request_error" if status < 500 else "server_error", code)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b""))]
        for name, value in self.server_state.default_headers:
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nx-request-id: %s\r\n"
                    b"connection: close\r\n%s\r\n" % (len(body), rid.encode("latin-1"), headers))
        self.transport.write(b"".join(head) + body)
        drain = self.app_state.get(DRAIN)
        if drain is not None:
            drain.observe(scope, status, code)   # counted and logged like any other answer
        if linger:
            self._linger()
        else:
            self.transport.close()

    def _linger(self) -> None:
        self.lingering = True
        self.flow.resume_reading()  # keep reading (and dropping) until the client is done or the time is up
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
        except (OSError, RuntimeError):
            self.transport.close()
            return
        self.loop.call_later(LINGER_S, self.transport.close)

    def _cancel_timers(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    # ---- shutdown -----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown calls this on every connection once it stopped accepting.

        It starts the drain's grace period (the first call does; gateway/drain.py). uvicorn closes
        a connection that is idle or still sending headers; here one whose request body is still on
        its way is answered 503 at once too: a slow client must not hold the shutdown, and a request
        that did not start cannot have done anything, so the client may retry it elsewhere."""
        drain = self.app_state.get(DRAIN)
        if drain is not None:
            drain.begin()
        if self.lingering:
            self.transport.close()
            return
        cycle = self.cycle
        if self.in_body and cycle is not None and not cycle.response_started:
            self.refuse(503, "The gateway is shutting down; retry the request.", "shutting_down", cycle,
                        b"retry-after: 1\r\n", linger=False)
            return
        if cycle is None and self.fresh and not self.header_bytes:
            self.closing = True
            self.loop.call_later(FRESH_WAIT_S, self._close_unless_asked)
            return
        super().shutdown()

    def _close_unless_asked(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()  # nothing came, or only part of a request's headers


# ---- the app `gateway serve` runs ---------------------------------------------------------------

def app_from_env() -> Drain:
    """Factory for `gateway serve` (uvicorn --factory; each of `--workers N` calls it): the app of
    gateway.app, inside the drain that ends what is still running when the grace period is up."""
    from .app import create_app   # here, not at the top: see Drain.observe

    loaded = load_config(default_config_path())
    return Drain(create_app(loaded), loaded.config.server.shutdown_grace_s)
