"""One JSON line per request: what it holds (`request_line`), written to stdout off the event loop
(`LineWriter`)."""

from __future__ import annotations

import asyncio
import io
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Callable

import orjson

from .record import RequestRecord

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
LEVEL_NAMES = {number: name for name, number in LEVELS.items()}


@dataclass(slots=True)
class Figures:
    """What the observer worked out for a request's line, beside what its record says."""

    level: int
    total_s: float
    ttft_s: float | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    saved_usd: float
    upstream_model: str | None   # the name the provider knows the answering model by


class RequestLines:
    """Formats request lines; keeps the timestamp's formatted second between lines."""

    def __init__(self, content: bool = False):
        self.content = content   # log.content: the messages and the answer's text go in too
        # ...with every PII entity the guardrails know masked (`<EMAIL_1>`), whatever the route's
        # rules (compiled when first needed: `content` may be turned on by a reload)
        self._mask: Callable[[str], str] | None = None
        self._second = -1
        self._prefix = ""

    def timestamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1000):03d}Z"

    def line(self, record: RequestRecord, figures: Figures) -> bytes:
        """The request's JSON line, newline included. `model` and `target` are the model's name in
        the config (as the metric label `model`); `upstream_model` is the name sent upstream."""
        status = record.status
        error = (record.error_kind or f"http_{status}") if status >= 400 else record.stream_error
        line: dict[str, Any] = {
            "ts": self.timestamp(),
            "level": LEVEL_NAMES[figures.level],
            "event": "request",
            "request_id": record.request_id,
            "endpoint": record.endpoint,
            "requested_model": record.requested_model,
            "route": record.route,
            "target": record.model,
            "provider": record.provider,
            "model": record.model,
            "upstream_model": figures.upstream_model,
            "status": status,
            "cache": record.cache,
            "stream": record.stream,
            "latency_ms": round(figures.total_s * 1000, 3),
            "ttft_ms": round(figures.ttft_s * 1000, 3) if figures.ttft_s is not None else None,
            "upstream_ms": round(record.upstream_s * 1000, 3),
            "queue_ms": round(record.queue_wait_s * 1000, 3),
            "prompt_tokens": figures.prompt_tokens,
            "completion_tokens": figures.completion_tokens,
            "cached_tokens": figures.cached_tokens,
            "cache_write_tokens": figures.cache_write_tokens,
            "tokens_estimated": record.usage_estimated,
            "cost_usd": round(record.cost_usd, 10),
            "saved_usd": round(figures.saved_usd, 10),
            "retries": record.retries,
            "fallbacks": record.fallbacks,
            "upstream_errors": [f"{p}:{k}" for p, k in record.upstream_errors],
            "error": error,
            "key": key_label(record.tenant) if record.tenant is not None else None,
        }
        line["prompt_version"] = record.prompt_version
        if record.trace is not None:
            line["trace_id"] = record.trace.trace_id
        line["tool_calls"] = tool_names(record.answer)
        if record.metadata is not None:
            line["metadata"] = record.metadata
        if record.guardrails:   # the rules that fired, never what they matched
            line["guardrails"] = [f"{stage}:{rule}:{action}" for stage, rule, action in record.guardrails]
        if record.path is not None:
            line["path"] = record.path
        if record.client_request_id is not None:
            line["client_request_id"] = record.client_request_id
        if record.coalesced:
            line["coalesced"] = True
        if record.similarity is not None:
            line["similarity"] = round(record.similarity, 4)
        if record.cache_bypass is not None:
            line["cache_bypass"] = record.cache_bypass
        if record.client_left:
            line["client_left"] = True
        if record.escalations:
            line["escalations"] = len(record.escalations)
            line["escalation_reasons"] = record.escalations
            line["escalation_cost_usd"] = record.escalation_cost_usd
        if self.content:
            from .guardrails import masked, pii_mask   # its detectors: only when content is logged

            if self._mask is None:
                self._mask = pii_mask()
            mask = self._mask
            line["messages"] = masked(record.messages, mask)
            answer = answer_text(record.answer)
            line["answer"] = mask(answer) if isinstance(answer, str) else answer
        return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE, default=str)


def event_line(timestamp: str, level: int, event: str, fields: dict[str, Any]) -> bytes:
    """A JSON line for something other than a request (a config reload), in the request lines' shape."""
    line = {"ts": timestamp, "level": LEVEL_NAMES[level], "event": event, **fields}
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE, default=str)


def tool_names(answer: dict[str, Any] | None) -> list[str]:
    """The names of the tools an answer called, in order (every choice's)."""
    names = []
    for choice in (answer or {}).get("choices") or ():
        for call in ((choice.get("message") or {}).get("tool_calls") or ()) if isinstance(choice, dict) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                names.append(function["name"])
    return names


def key_label(tenant: str | None) -> str:
    """A gateway key's name; a client's own token only as a short hash; never a key itself."""
    if not tenant:
        return "anonymous"
    if tenant.startswith("key:"):
        return tenant[4:]
    return tenant[:18]  # "token:" and 12 hex digits of the token's sha256


def answer_text(answer: dict[str, Any] | None) -> str | None:
    if not isinstance(answer, dict):
        return None
    parts = []
    for choice in answer.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            parts.append(message["content"])
    return "\n".join(parts) if parts else None


class LineWriter:
    """Writes ready-made lines from a background thread, so the event loop never waits on stdout
    (a line reaches stdout within about 50 ms).

    The stdlib's QueueHandler costs about 18 us a line (a LogRecord, a copy, a format) where a
    request line is already JSON bytes; here a line is one queue put (well under 1 us), and the
    thread writes and flushes whatever has piled up in one go.
    """

    BATCH = 512
    # Lines written on the event loop are handed to the thread together, at most this often: waking
    # the thread (and taking the GIL from the loop) once per request cost about 10% of throughput.
    HANDOFF_S = 0.05

    def __init__(self, stream: IO[str] | IO[bytes] | None = None):
        self.stream = stream if stream is not None else sys.stdout
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._pending: list[bytes] = []
        self._handoff_at: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._run, name="gateway-log", daemon=True)
        self._thread.start()

    def write(self, line: bytes) -> None:
        """`line` ends with a newline."""
        if self._handoff_at is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not on an event loop: hand it over at once
                self._queue.put(line)
                return
            self._handoff_at = loop.call_later(self.HANDOFF_S, self._handoff)
        self._pending.append(line)

    def _handoff(self) -> None:
        self._handoff_at = None
        if self._pending:
            self._queue.put(b"".join(self._pending))
            self._pending.clear()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop."""
        if self._handoff_at is not None:
            self._handoff_at.cancel()
        self._handoff()
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            batch = [get()]
            try:
                while len(batch) < self.BATCH:
                    batch.append(get_nowait())
            except queue.Empty:
                pass
            stop = None in batch
            lines = [line for line in batch if line is not None] if stop else batch
            if lines:
                self._write(b"".join(lines))  # type: ignore[arg-type]
            if stop:
                return

    def _write(self, data: bytes) -> None:
        stream = self.stream
        try:
            buffer = getattr(stream, "buffer", None)
            if buffer is not None:
                stream.flush()  # whatever was printed before goes first
                buffer.write(data)
                buffer.flush()
            elif isinstance(stream, io.TextIOBase):
                stream.write(data.decode())
                stream.flush()
            else:
                stream.write(data)  # type: ignore[arg-type]
                stream.flush()
        except (OSError, ValueError):  # stdout closed or gone: the line cannot go anywhere
            pass
