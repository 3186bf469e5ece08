"""A fake OpenAI upstream for tests, the demo and the benchmark.

It answers /v1/chat/completions (JSON and SSE), /v1/embeddings and /v1/models like OpenAI does, and
has knobs for what real providers do on a bad day: latency, chunk pacing, error statuses with
Retry-After, broken streams, invalid JSON. It counts calls and the most requests it saw in flight.

The answer's shape follows the request, as OpenAI's does: `tools` get a tool call (unless
`tool_choice` is "none", or the last message is a tool result and the choice is "auto"; a named
`tool_choice` picks that tool), its arguments filled from the tool's `parameters` schema with
placeholders of the right types; `n` gets n choices; `response_format` json_object or json_schema
gets JSON content (the schema's required properties); `logprobs` (and `top_logprobs`) get
`logprobs.content` per token. All of it in streams too, with tool calls streamed as OpenAI does
(the id, type and name first, then argument fragments). The `reply` knob replaces the text of
text answers (JSON ones included), never a tool call.

It answers OpenAI's Responses API too (`POST /v1/responses`, JSON and its SSE events), as
strictly as OpenAI does and with OpenAI's error codes: unknown top-level fields, a missing `input`,
input items and content parts of a type the API does not have, a `function_call_output` whose
call_id no `function_call` before it (in the input, or in the chain of `previous_response_id`)
made, `max_output_tokens` below 16, a `previous_response_id` it never answered (it keeps what it
answered unless `store` is false). The answer follows the request the same way (function tools
get a `function_call` unless the last input item is a `function_call_output`, `text.format`
json_schema gets JSON, a web_search tool a `web_search_call` item before the message), with the
same knobs (`finish_reason` "length" makes the response incomplete) and `cached_tokens`.

Knobs are set on `FakeUpstream.knobs` (shared by all requests) or per request with a `fake` object
in the request body (the gateway passes unknown fields through), e.g. `extra_body={"fake": {...}}`.

Run alone: `python tests/fake_upstream.py --port 9999 [--latency 0.05]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import math
import re
import struct
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterator

import orjson
from aiohttp import web

try:
    from .fake_server import Served, free_port  # noqa: F401 (free_port: the tests import it from here)
except ImportError:   # run as a script (the benchmark's echo upstream, the demo)
    from fake_server import Served, free_port  # type: ignore[no-redef]


@dataclass
class Knobs:
    latency_s: float = 0.0           # before the response headers
    chunk_delay_s: float = 0.0       # between stream chunks
    error_status: int = 0            # answer every request with this status
    error_times: int = -1            # ...only for the next N requests (-1: always)
    retry_after: str | None = None   # Retry-After header on errors
    invalid_json: bool = False       # 200 with a body that is not JSON
    broken_after: int = -1           # streams: drop the connection after N content chunks
    no_done: bool = False            # streams: end cleanly but without `data: [DONE]`
    finish_reason: str = "stop"
    reply: str | None = None         # fixed answer text; default echoes the last user message
    chunk_words: int = 1             # words per stream chunk
    chunk_chars: int = 0             # characters per stream chunk instead (0: by words), a split at any offset
    logprob: float | None = None     # per-token logprob when the request asks for logprobs
    cached_tokens: int = 0           # Responses: usage.input_tokens_details.cached_tokens (at most the input's)


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]  # names lower-cased


@dataclass
class FakeUpstream(Served):
    host: str = "127.0.0.1"
    port: int = 0
    name: str = "fake"
    knobs: Knobs = field(default_factory=Knobs)

    def __post_init__(self) -> None:
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._generation = 0
        self.disconnects = 0
        self.seen: list[Seen] = []
        self._ids = itertools.count(1)
        self._call_ids = itertools.count(1)
        self.stored_responses: dict[str, dict[str, Any]] = {}   # Responses kept for previous_response_id

    # ---- control -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def reset(self) -> None:
        self.knobs = Knobs()
        self.calls = self.in_flight = self.max_in_flight = self.disconnects = 0
        self._generation += 1
        self.seen.clear()
        self.stored_responses.clear()

    def set(self, **knobs: Any) -> None:
        self.knobs = replace(self.knobs, **knobs)

    def calls_to(self, path: str) -> int:
        return sum(1 for s in self.seen if s.path == path)

    # ---- the server ----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/responses", self.responses_api)
        app.router.add_get("/v1/models", self.models)
        return app

    async def _begin(self, request: web.Request) -> tuple[dict[str, Any], Knobs]:
        raw = await request.read()
        body = orjson.loads(raw) if raw else {}
        self.calls += 1
        self.seen.append(Seen(request.path, body, {k.lower(): v for k, v in request.headers.items()}))
        knobs = self.knobs
        if isinstance(body.get("fake"), dict):
            names = {f.name for f in fields(Knobs)}
            knobs = replace(knobs, **{k: v for k, v in body["fake"].items() if k in names})
        if knobs.latency_s:
            await asyncio.sleep(knobs.latency_s)
        return body, knobs

    def _error(self, knobs: Knobs) -> web.Response | None:
        if knobs.error_status and knobs.error_times != 0:
            if knobs.error_times > 0:
                self.knobs.error_times -= 1
            headers = {"Retry-After": knobs.retry_after} if knobs.retry_after else None
            body = {"error": {"message": f"fake upstream error {knobs.error_status}", "type": "server_error"
                              if knobs.error_status >= 500 else "invalid_request_error", "param": None, "code": None}}
            return web.Response(body=orjson.dumps(body), status=knobs.error_status, headers=headers,
                                content_type="application/json")
        if knobs.invalid_json:
            return web.Response(body=b"<html>not json</html>", content_type="application/json")
        return None

    def _track(self, delta: int, generation: int) -> None:
        # Requests left over from before the last reset() (a slow one a test gave up on) are not
        # counted: they would skew the next test's in-flight figures.
        if generation != self._generation:
            return
        self.in_flight += delta
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        generation = self._generation
        self._track(+1, generation)
        try:
            body, knobs = await self._begin(request)
            error = self._error(knobs)
            if error is not None:
                return error
            try:
                n = choice_count(body)
                call = function_to_call(body)
                text = answer_text(body) if knobs.reply is None else knobs.reply
            except InvalidRequest as exc:
                return invalid_request(exc)
            if call is not None:
                return await self._tool_calls(request, body, knobs, call, n)
            if body.get("stream"):
                return await self._stream(request, body, knobs, text)
            return web.Response(body=orjson.dumps(self._completion(body, knobs, text)), content_type="application/json")
        finally:
            self._track(-1, generation)

    def _usage(self, body: dict[str, Any], text: str) -> dict[str, int]:
        prompt = sum(len(str(m.get("content") or "").split()) + 3 for m in body.get("messages", []))
        completion = len(text.split())
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _logprobs(self, body: dict[str, Any], knobs: Knobs, words: list[str]) -> dict[str, Any] | None:
        if not body.get("logprobs"):
            return None
        lp = knobs.logprob if knobs.logprob is not None else -0.01
        top = body.get("top_logprobs") or 0
        tokens = [{"token": w, "logprob": lp, "bytes": list(w.encode()), "top_logprobs": top_logprobs(w, lp, top)}
                  for w in words]
        return {"content": tokens, "refusal": None}

    def _head(self, body: dict[str, Any], kind: str) -> dict[str, Any]:
        """The fields every completion (kind "chat.completion") and chunk ("chat.completion.chunk") has."""
        return {"id": f"chatcmpl-{self.name}-{next(self._ids)}", "object": kind, "created": int(time.time()),
                "model": body.get("model"), "system_fingerprint": "fp_fake"}

    def _completion(self, body: dict[str, Any], knobs: Knobs, text: str) -> dict[str, Any]:
        n = choice_count(body)
        return {
            **self._head(body, "chat.completion"),
            "choices": [{
                "index": i,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": self._logprobs(body, knobs, text.split()),
                "finish_reason": knobs.finish_reason,
            } for i in range(n)],
            "usage": self._usage(body, " ".join([text] * n)),  # completion tokens of all the choices
        }

    async def _stream(self, request: web.Request, body: dict[str, Any], knobs: Knobs, text: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        base = self._head(body, "chat.completion.chunk")

        n = choice_count(body)

        def event(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None, index: int = 0) -> bytes:
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            chunk = {**base, "choices": [choice]}
            return b"data: " + orjson.dumps(chunk) + b"\n\n"

        if knobs.chunk_chars:
            pieces = [text[i:i + knobs.chunk_chars] for i in range(0, len(text), knobs.chunk_chars)]
        else:
            words = text.split(" ")
            pieces = [" ".join(words[i:i + knobs.chunk_words]) for i in range(0, len(words), knobs.chunk_words)]
            pieces = [p if i == 0 else " " + p for i, p in enumerate(pieces)]
        # With n > 1 the choices' chunks interleave, each with its own index, as OpenAI's do.
        with self._client_may_leave():
            for c in range(n):
                await resp.write(event({"role": "assistant", "content": ""}, index=c))
            for i, piece in enumerate(pieces):
                if knobs.broken_after == i:
                    request.transport.close()
                    return resp
                if knobs.chunk_delay_s:
                    await asyncio.sleep(knobs.chunk_delay_s)
                for c in range(n):
                    await resp.write(event({"content": piece}, logprobs=self._logprobs(body, knobs, [piece]), index=c))
            for c in range(n):
                await resp.write(event({}, knobs.finish_reason, index=c))
            await self._stream_end(resp, body, base, knobs, " ".join([text] * n))
        return resp

    @contextlib.contextmanager
    def _client_may_leave(self) -> Iterator[None]:
        """A client that leaves mid-stream (ConnectionResetError, aiohttp's ClientConnectionResetError,
        a broken pipe, or the handler cancelled) is counted, never logged with a traceback."""
        try:
            yield
        except ConnectionError:
            self.disconnects += 1
        except asyncio.CancelledError:
            self.disconnects += 1
            raise

    async def _stream_end(self, resp: web.StreamResponse, body: dict[str, Any], base: dict[str, Any], knobs: Knobs,
                          text: str) -> None:
        """After the finish chunks: the usage chunk when asked for, `[DONE]` (unless a knob says not)."""
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {**base, "choices": [], "usage": self._usage(body, text)}
            await resp.write(b"data: " + orjson.dumps(usage) + b"\n\n")
        if not knobs.no_done:
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()

    async def _tool_calls(self, request: web.Request, body: dict[str, Any], knobs: Knobs, function: dict[str, Any],
                          n: int) -> web.StreamResponse:
        """The answer that calls `function` (a tool's `function` object), in each of the n choices."""
        name = str(function.get("name"))
        arguments = orjson.dumps(placeholder(function.get("parameters") or {"type": "object"})).decode()
        fragments = argument_fragments(arguments)
        calls = [f"call_{self.name}{next(self._call_ids):08d}" for _ in range(n)]
        # A route's knob (length, say) wins; the default finish of a tool call is "tool_calls".
        finish = "tool_calls" if knobs.finish_reason == "stop" else knobs.finish_reason
        spoken = " ".join([name, *fragments] * n)  # what the usage counts
        if not body.get("stream"):
            completion = {
                **self._head(body, "chat.completion"),
                "choices": [{
                    "index": i,
                    "message": {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
                        {"id": calls[i], "type": "function", "function": {"name": name, "arguments": arguments}}]},
                    "logprobs": None,  # logprobs are of content tokens, and a tool call has none
                    "finish_reason": finish,
                } for i in range(n)],
                "usage": self._usage(body, spoken),
            }
            return web.Response(body=orjson.dumps(completion), content_type="application/json")

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        base = self._head(body, "chat.completion.chunk")

        def event(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
            chunk = {**base, "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            return b"data: " + orjson.dumps(chunk) + b"\n\n"

        with self._client_may_leave():
            # First the call's id, type and name (with empty arguments), then the arguments in pieces.
            for c in range(n):
                await resp.write(event(c, {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
                    {"index": 0, "id": calls[c], "type": "function", "function": {"name": name, "arguments": ""}}]}))
            for i, fragment in enumerate(fragments):
                if knobs.broken_after == i:
                    request.transport.close()
                    return resp
                if knobs.chunk_delay_s:
                    await asyncio.sleep(knobs.chunk_delay_s)
                for c in range(n):
                    await resp.write(event(c, {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}))
            for c in range(n):
                await resp.write(event(c, {}, finish))
            await self._stream_end(resp, body, base, knobs, spoken)
        return resp

    async def embeddings(self, request: web.Request) -> web.Response:
        generation = self._generation
        self._track(+1, generation)
        try:
            body, knobs = await self._begin(request)
            error = self._error(knobs)
            if error is not None:
                return error
            inputs = body.get("input")
            inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
            data = [{"object": "embedding", "index": i, "embedding": fake_embedding(str(x))} for i, x in enumerate(inputs)]
            tokens = sum(len(str(x).split()) for x in inputs)
            out = {"object": "list", "data": data, "model": body.get("model"),
                   "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
            return web.Response(body=orjson.dumps(out), content_type="application/json")
        finally:
            self._track(-1, generation)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": self.name}]})

    # ---- the Responses API -----------------------------------------------------------------

    async def responses_api(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/responses: a `response` object, or its stream of events."""
        generation = self._generation
        self._track(+1, generation)
        try:
            body, knobs = await self._begin(request)
            error = self._error(knobs)
            if error is not None:
                return error
            try:
                context = check_responses_request(body, self.stored_responses)
                response = self._response(body, knobs, context)
            except Refused as exc:
                return refused(exc)
            if body.get("store") is not False:   # OpenAI keeps a response unless told not to
                self.stored_responses[response["id"]] = {"items": context + response["output"]}
            if body.get("stream"):
                return await self._responses_stream(request, knobs, response)
            return web.Response(body=orjson.dumps(response), content_type="application/json")
        finally:
            self._track(-1, generation)

    def _response(self, body: dict[str, Any], knobs: Knobs, context: list[dict[str, Any]]) -> dict[str, Any]:
        """The `response` object the request gets: its output items, status, usage, and the
        request's settings echoed with OpenAI's defaults."""
        base = f"{self.name}{next(self._ids):06d}"
        output: list[dict[str, Any]] = []
        status, incomplete = "completed", None
        function = responses_function_to_call(body, context)
        if function is not None:
            arguments = orjson.dumps(placeholder(function.get("parameters") or {"type": "object"})).decode()
            output.append({"id": f"fc_{base}", "type": "function_call", "status": "completed",
                           "call_id": f"call_{self.name}{next(self._call_ids):08d}", "name": function["name"],
                           "arguments": arguments})
            output_tokens = len(function["name"].split()) + len(argument_fragments(arguments))
        else:
            if searches_the_web(body):
                output.append({"id": f"ws_{base}", "type": "web_search_call", "status": "completed",
                               "action": {"type": "search", "query": last_input_text(context)}})
            text = responses_answer_text(body, context) if knobs.reply is None else knobs.reply
            words = text.split(" ")
            limit = body.get("max_output_tokens")
            if isinstance(limit, int) and len(text.split()) > limit:   # cut at the token limit
                text, status, incomplete = " ".join(words[:limit]), "incomplete", {"reason": "max_output_tokens"}
            elif knobs.finish_reason in ("length", "content_filter"):
                status = "incomplete"
                incomplete = {"reason": "max_output_tokens" if knobs.finish_reason == "length" else "content_filter"}
            output.append({"id": f"msg_{base}", "type": "message", "status": status, "role": "assistant",
                           "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
            output_tokens = len(text.split())
        input_tokens = responses_prompt_tokens(body, context)
        usage = {"input_tokens": input_tokens,
                 "input_tokens_details": {"cached_tokens": min(knobs.cached_tokens, input_tokens),
                                          "cache_write_tokens": 0},
                 "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": input_tokens + output_tokens}
        now = int(time.time())
        text_config = body.get("text") or {}
        reasoning = body.get("reasoning") or {}
        return {
            "id": f"resp_{base}", "object": "response", "created_at": now, "status": status,
            "background": bool(body.get("background")), "completed_at": now if status == "completed" else None,
            "error": None, "incomplete_details": incomplete, "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"), "max_tool_calls": body.get("max_tool_calls"),
            "model": body["model"], "output": output, "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
            "safety_identifier": body.get("safety_identifier"), "service_tier": body.get("service_tier") or "default",
            "store": body.get("store") is not False, "temperature": body.get("temperature", 1.0),
            "text": {"format": text_config.get("format") or {"type": "text"},
                     "verbosity": text_config.get("verbosity") or "medium"},
            "tool_choice": body.get("tool_choice", "auto"), "tools": [echoed_tool(t) for t in body.get("tools") or ()],
            "top_logprobs": body.get("top_logprobs", 0), "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation") or "disabled", "usage": usage, "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }

    async def _responses_stream(self, request: web.Request, knobs: Knobs,
                                response: dict[str, Any]) -> web.StreamResponse:
        """The response as OpenAI streams it: response.created and .in_progress; each output item
        between output_item.added and .done (a message's text part between content_part.added and
        .done, its text in output_text.delta events, then output_text.done; a function call's
        arguments in function_call_arguments.delta events, then .done; a web search's progress);
        then response.completed (or .incomplete) with the whole response. `broken_after` drops the
        connection after N deltas; `no_done` ends the stream cleanly before the last event."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        sequence = itertools.count()

        async def send(kind: str, data: dict[str, Any]) -> None:
            event = {"type": kind, "sequence_number": next(sequence), **data}
            await resp.write(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n")

        started = {**response, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None,
                   "completed_at": None}
        deltas = 0
        with self._client_may_leave():
            await send("response.created", {"response": started})
            await send("response.in_progress", {"response": started})
            for index, item in enumerate(response["output"]):
                where = {"item_id": item["id"], "output_index": index}
                if item["type"] == "message":
                    await send("response.output_item.added", {"output_index": index, "item": {
                        **item, "status": "in_progress", "content": []}})
                    for content_index, part in enumerate(item["content"]):
                        at = {**where, "content_index": content_index}
                        await send("response.content_part.added", {**at, "part": {**part, "text": ""}})
                        words = part["text"].split(" ")
                        step = knobs.chunk_words
                        pieces = [" ".join(words[i:i + step]) for i in range(0, len(words), step)]
                        for i, piece in enumerate(pieces):
                            if knobs.broken_after == deltas:
                                request.transport.close()
                                return resp
                            if knobs.chunk_delay_s:
                                await asyncio.sleep(knobs.chunk_delay_s)
                            await send("response.output_text.delta", {**at, "delta": piece if i == 0 else " " + piece,
                                                                      "logprobs": []})
                            deltas += 1
                        await send("response.output_text.done", {**at, "text": part["text"], "logprobs": []})
                        await send("response.content_part.done", {**at, "part": part})
                elif item["type"] == "function_call":
                    await send("response.output_item.added", {"output_index": index, "item": {
                        **item, "status": "in_progress", "arguments": ""}})
                    for fragment in argument_fragments(item["arguments"]):
                        if knobs.broken_after == deltas:
                            request.transport.close()
                            return resp
                        if knobs.chunk_delay_s:
                            await asyncio.sleep(knobs.chunk_delay_s)
                        await send("response.function_call_arguments.delta", {**where, "delta": fragment})
                        deltas += 1
                    await send("response.function_call_arguments.done", {**where, "arguments": item["arguments"]})
                else:   # a web search: its progress, no deltas
                    await send("response.output_item.added", {"output_index": index, "item": {
                        **item, "status": "in_progress"}})
                    for stage in ("in_progress", "searching", "completed"):
                        await send(f"response.web_search_call.{stage}", where)
                await send("response.output_item.done", {"output_index": index, "item": item})
            if not knobs.no_done:
                last = "response.completed" if response["status"] == "completed" else "response.incomplete"
                await send(last, {"response": response})
            await resp.write_eof()
        return resp


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


class InvalidRequest(Exception):
    """A request OpenAI refuses with 400 invalid_request_error."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def invalid_request(exc: InvalidRequest) -> web.Response:
    body = {"error": {"message": str(exc), "type": "invalid_request_error", "param": exc.param, "code": None}}
    return web.Response(body=orjson.dumps(body), status=400, content_type="application/json")


def choice_count(body: dict[str, Any]) -> int:
    n = body.get("n")
    if n is None:
        return 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
        raise InvalidRequest(f"Invalid 'n': expected an integer from 1 to 128, got {n!r}.", "n")
    return n


def function_to_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function tool the answer calls, or None for a text answer. Without `tool_choice` (that is
    "auto") the model calls the first tool, unless it has just been given a tool's result."""
    tools = [t["function"] for t in body.get("tools") or () if isinstance(t, dict) and t.get("type") == "function"
             and isinstance(t.get("function"), dict)]
    if not tools:
        return None
    choice = body.get("tool_choice", "auto")
    if choice == "none":
        return None
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        for function in tools:
            if function.get("name") == name:
                return function
        raise InvalidRequest(f"Invalid value for 'tool_choice': function '{name}' is not one of the 'tools'.",
                             "tool_choice")
    messages = body.get("messages") or []
    if choice == "auto" and messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
        return None
    return tools[0]


def answer_text(body: dict[str, Any]) -> str:
    """The default answer: the last user message echoed, as JSON when `response_format` asks for it."""
    text = "Echo: " + last_user_text(body)
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        return json.dumps({"answer": text}, ensure_ascii=False)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise InvalidRequest("Missing required parameter: 'response_format.json_schema'.", "response_format")
        return json.dumps(placeholder(spec.get("schema") or {"type": "object"}), ensure_ascii=False)
    return text


# Strings of a known `format`; any other string is "example".
FORMATTED = {"date": "2024-01-01", "date-time": "2024-01-01T00:00:00Z", "time": "00:00:00",
             "email": "user@example.com", "uri": "https://example.com/", "uuid": "00000000-0000-4000-8000-000000000000"}


def placeholder(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A value valid for a simple JSON schema: objects with their required properties, one item in
    arrays, the first of an enum or anyOf, local `$ref`s followed. Not a schema solver: patterns
    and the like are not looked at."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 32:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        target = root
        for part in ref.lstrip("#").strip("/").split("/") if ref != "#" else ():
            target = target.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(target, dict) else None
        return placeholder(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combined in ("anyOf", "oneOf", "allOf"):
        if schema.get(combined):
            return placeholder(schema[combined][0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in schema:
        kind = "object"
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: placeholder(properties.get(name, {}), root, depth + 1) for name in schema.get("required") or ()}
    if kind == "array":
        items = schema.get("items")
        count = max(schema.get("minItems", 1), 1) if isinstance(items, dict) else 0
        if isinstance(schema.get("maxItems"), int):
            count = min(count, schema["maxItems"])
        return [placeholder(items, root, depth + 1) for _ in range(count)]
    if kind == "string":
        value = FORMATTED.get(schema.get("format"), "example").ljust(schema.get("minLength", 0), "x")
        return value[:schema["maxLength"]] if isinstance(schema.get("maxLength"), int) else value
    if kind in ("integer", "number"):
        value: float = 1 if kind == "integer" else 1.5
        low, high = schema.get("minimum"), schema.get("maximum")
        if isinstance(low, (int, float)) and value < low:
            value = math.ceil(low) if kind == "integer" else low
        if isinstance(high, (int, float)) and value > high:
            value = math.floor(high) if kind == "integer" else high
        return value
    if kind == "boolean":
        return True
    return None


_FRAGMENTS = re.compile(r"\w+|[^\w]+")


def argument_fragments(arguments: str) -> list[str]:
    """A tool call's arguments in the pieces a stream sends them in: words and runs of punctuation."""
    return _FRAGMENTS.findall(arguments) or [arguments]


def top_logprobs(token: str, logprob: float, top: int) -> list[dict[str, Any]]:
    """`top` most likely tokens at a position: the one chosen, and made-up alternatives sharing the
    rest of the probability (halving each time), most likely first."""
    if top <= 0:
        return []
    rest = max(1.0 - math.exp(logprob), 1e-6)
    found = [(token, logprob)] + [(f"{token}{'~' * k}", math.log(rest / 2 ** k)) for k in range(1, top)]
    found.sort(key=lambda t: -t[1])
    return [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in found]


def fake_embedding(text: str, dims: int = 32) -> list[float]:
    """A deterministic unit vector: equal texts embed equally, different texts almost never do."""
    seed = hashlib.sha256(text.encode()).digest() * (dims * 4 // 32 + 1)
    raw = struct.unpack(f"<{dims}i", seed[: dims * 4])
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


# ---- the Responses API: what it refuses, and what it answers --------------------------------------

# The request's top-level fields (OpenAI's reference, and the SDK's ResponseCreateParams), and the
# fake's own `fake` knobs.
RESPONSES_FIELDS = frozenset({
    "access_programs", "background", "background_options", "context_management", "conversation", "image",
    "include", "input", "instructions", "max_output_tokens", "max_tool_calls", "metadata", "model", "moderation",
    "parallel_tool_calls", "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store", "stream",
    "stream_options", "temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation",
    "user", "fake"})
INPUT_ITEM_TYPES = (
    "message", "function_call", "function_call_output", "reasoning", "item_reference", "file_search_call",
    "computer_call", "computer_call_output", "web_search_call", "tool_search_call", "tool_search_output",
    "additional_tools", "configuration_update", "compaction", "compaction_trigger", "image_generation_call",
    "code_interpreter_call", "local_shell_call", "local_shell_call_output", "shell_call", "shell_call_output",
    "apply_patch_call", "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request",
    "mcp_approval_response", "mcp_call", "custom_tool_call", "custom_tool_call_output", "program",
    "program_output")
TOOL_TYPES = (
    "function", "file_search", "computer", "computer_use_preview", "web_search", "web_search_2025_08_26", "mcp",
    "code_interpreter", "programmatic_tool_calling", "image_generation", "local_shell", "shell", "custom",
    "namespace", "tool_search", "web_search_preview", "web_search_preview_2025_03_11", "apply_patch")
WEB_SEARCH = ("web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11")
INCLUDABLE = (
    "file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
    "message.input_image.image_url", "computer_call_output.output.image_url", "code_interpreter_call.outputs",
    "reasoning.encrypted_content", "message.output_text.logprobs")
INPUT_PARTS = ("input_text", "input_image", "input_file")
OUTPUT_PARTS = ("output_text", "refusal")
ROLES = ("user", "assistant", "system", "developer")
FORMATS = ("text", "json_object", "json_schema")
MIN_OUTPUT_TOKENS = 16


class Refused(InvalidRequest):
    """A Responses request OpenAI refuses with 400, with its error code."""

    def __init__(self, message: str, param: str | None, code: str | None = None):
        super().__init__(message, param)  # type: ignore[arg-type]
        self.code = code


def refused(exc: Refused) -> web.Response:
    body = {"error": {"message": str(exc), "type": "invalid_request_error", "param": exc.param, "code": exc.code}}
    return web.Response(body=orjson.dumps(body), status=400, content_type="application/json")


def _missing(param: str) -> Refused:
    return Refused(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _invalid_value(value: Any, supported: tuple[str, ...], param: str) -> Refused:
    names = [f"'{s}'" for s in supported]
    listed = ", ".join(names[:-1]) + f", and {names[-1]}" if len(names) > 1 else names[0]
    return Refused(f"Invalid value: '{value}'. Supported values are: {listed}.", param, "invalid_value")


def _invalid_type(param: str, expected: str, value: Any) -> Refused:
    return Refused(f"Invalid type for '{param}': expected {expected}, but got {type(value).__name__} instead.",
                   param, "invalid_type")


def check_responses_request(body: dict[str, Any], stored: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """What OpenAI checks before it answers; returns the conversation the answer follows (the
    items of `previous_response_id`'s chain, then this request's input)."""
    for name in body:
        if name not in RESPONSES_FIELDS:
            raise Refused(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _missing("model")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise _invalid_type("stream", "a boolean", body["stream"])
    limit = body.get("max_output_tokens")
    if limit is not None:
        if type(limit) is not int:
            raise _invalid_type("max_output_tokens", "an integer", limit)
        if limit < MIN_OUTPUT_TOKENS:
            raise Refused(f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
                          f"{MIN_OUTPUT_TOKENS}, but got {limit} instead.", "max_output_tokens",
                          "integer_below_min_value")
    for name, high in (("temperature", 2), ("top_p", 1)):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _invalid_type(name, "a decimal", value)
        if value > high:
            raise Refused(f"Invalid '{name}': decimal above maximum value. Expected a value <= {high}, but got "
                          f"{value} instead.", name, "decimal_above_max_value")
        if value < 0:
            raise Refused(f"Invalid '{name}': decimal below minimum value. Expected a value >= 0, but got "
                          f"{value} instead.", name, "decimal_below_min_value")
    if body.get("instructions") is not None and not isinstance(body["instructions"], str):
        raise _invalid_type("instructions", "a string", body["instructions"])
    for i, name in enumerate(body.get("include") or ()):
        if name not in INCLUDABLE:
            raise _invalid_value(name, INCLUDABLE, f"include[{i}]")
    tools = _check_tools(body.get("tools"))
    _check_tool_choice(body.get("tool_choice"), tools)
    _check_text(body.get("text"))
    context: list[dict[str, Any]] = []
    previous = body.get("previous_response_id")
    if previous is not None:
        if body.get("conversation") is not None:
            raise Refused("Mutually exclusive parameters: Ensure you are only providing one of: "
                          "'previous_response_id' or 'conversation'.", None, "mutually_exclusive_parameters")
        if previous not in stored:
            raise Refused(f"Previous response with id '{previous}' not found.", "previous_response_id",
                          "previous_response_not_found")
        context = list(stored[previous]["items"])
    given = body.get("input")
    if given is None:
        if previous is None and body.get("prompt") is None and body.get("conversation") is None:
            raise _missing("input")
        items: list[dict[str, Any]] = []
    elif isinstance(given, str):
        items = [{"type": "message", "role": "user", "content": given}]
    elif isinstance(given, list):
        items = [_check_item(item, f"input[{i}]") for i, item in enumerate(given)]
    else:
        raise Refused("Invalid type for 'input': expected one of a string or array of input items, but got "
                      f"{type(given).__name__} instead.", "input", "invalid_type")
    items = [_referenced(item, where, stored) if item["type"] == "item_reference" else item
             for where, item in zip((f"input[{i}]" for i in itertools.count()), items)]
    _check_calls_answered(context, items)
    return context + items


def _referenced(item: dict[str, Any], where: str, stored: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The stored item an item_reference names (an output item of a response kept)."""
    for kept in stored.values():
        for found in kept["items"]:
            if found.get("id") == item["id"]:
                return found
    raise Refused(f"Item with id '{item['id']}' not found.", f"{where}.id", "item_not_found")


def _check_tools(tools: Any) -> dict[str, dict[str, Any]]:
    """The function tools by name."""
    if tools is None:
        return {}
    if not isinstance(tools, list):
        raise _invalid_type("tools", "an array", tools)
    functions: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _invalid_type(f"tools[{i}]", "an object", tool)
        if tool.get("type") not in TOOL_TYPES:
            raise _invalid_value(tool.get("type"), TOOL_TYPES, f"tools[{i}].type")
        if tool["type"] != "function":
            continue
        name = tool.get("name")
        if not isinstance(name, str):   # a chat completions tool ({"function": {...}}) lands here
            raise _missing(f"tools[{i}].name")
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name):
            raise Refused(f"Invalid 'tools[{i}].name': string does not match pattern. Expected a string that "
                          "matches the pattern '^[a-zA-Z0-9_-]+$'.", f"tools[{i}].name", "invalid_value")
        if tool.get("parameters") is not None and not isinstance(tool["parameters"], dict):
            raise _invalid_type(f"tools[{i}].parameters", "an object", tool["parameters"])
        functions[name] = tool
    return functions


def _check_tool_choice(choice: Any, functions: dict[str, dict[str, Any]]) -> None:
    if choice is None or choice in ("none", "auto", "required"):
        return
    if not isinstance(choice, dict):
        raise _invalid_value(choice, ("none", "auto", "required"), "tool_choice")
    if choice.get("type") == "function" and choice.get("name") not in functions:
        raise Refused(f"Tool choice 'function' with name '{choice.get('name')}' not found in 'tools' parameter.",
                      "tool_choice", "invalid_value")


def _check_text(text: Any) -> None:
    if text is None:
        return
    if not isinstance(text, dict):
        raise _invalid_type("text", "an object", text)
    spec = text.get("format")
    if spec is None:
        return
    if not isinstance(spec, dict) or spec.get("type") not in FORMATS:
        raise _invalid_value(spec.get("type") if isinstance(spec, dict) else spec, FORMATS, "text.format.type")
    if spec["type"] == "json_schema":
        for name in ("name", "schema"):
            if spec.get(name) is None:
                raise _missing(f"text.format.{name}")
        if not isinstance(spec["schema"], dict):
            raise _invalid_type("text.format.schema", "an object", spec["schema"])


def _check_item(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _invalid_type(where, "an object", item)
    kind = item.get("type", "message" if "role" in item else "item_reference")
    if kind not in INPUT_ITEM_TYPES:
        raise _invalid_value(kind, INPUT_ITEM_TYPES, f"{where}.type")
    if kind == "message":
        role = item.get("role")
        if role is None:
            raise _missing(f"{where}.role")
        if role not in ROLES:
            raise _invalid_value(role, ROLES, f"{where}.role")
        content = item.get("content")
        if content is None:
            raise _missing(f"{where}.content")
        if isinstance(content, list):
            _check_parts(content, f"{where}.content", OUTPUT_PARTS if role == "assistant" else INPUT_PARTS)
        elif not isinstance(content, str):
            raise _invalid_type(f"{where}.content", "one of a string or array of input content", content)
    elif kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if not isinstance(item.get(name), str):
                raise _missing(f"{where}.{name}")
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise _missing(f"{where}.call_id")
        output = item.get("output")
        if output is None:
            raise _missing(f"{where}.output")
        if isinstance(output, list):
            _check_parts(output, f"{where}.output", INPUT_PARTS)
        elif not isinstance(output, str):
            raise _invalid_type(f"{where}.output", "one of a string or array of input content", output)
    elif kind == "item_reference" and not isinstance(item.get("id"), str):
        raise _missing(f"{where}.id")
    return {**item, "type": kind}


def _check_parts(parts: list[Any], where: str, supported: tuple[str, ...]) -> None:
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in supported:
            raise _invalid_value(kind, supported, f"{where}[{j}].type")
        if kind in ("input_text", "output_text") and not isinstance(part.get("text"), str):
            raise _missing(f"{where}[{j}].text")
        if kind == "input_image" and part.get("image_url") is None and part.get("file_id") is None:
            raise Refused("Invalid input_image: one of 'image_url' or 'file_id' must be provided.",
                          f"{where}[{j}]", "missing_required_parameter")


def _check_calls_answered(context: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
    """Every function_call_output answers a function_call made before it (in this input, or in
    the previous response's chain); a previous response's function calls must all be answered."""
    made = {item["call_id"] for item in context if item.get("type") == "function_call"}
    for item in items:
        if item["type"] == "function_call":
            made.add(item["call_id"])
        elif item["type"] == "function_call_output" and item["call_id"] not in made:
            raise Refused(f"No tool call found for function call output with call_id {item['call_id']}.", "input")
    if context and context[-1].get("type") == "function_call":
        answered = {item["call_id"] for item in items if item["type"] == "function_call_output"}
        for item in reversed(context):
            if item.get("type") != "function_call":
                break
            if item["call_id"] not in answered:
                raise Refused(f"No tool output found for function call {item['call_id']}.", "input")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(str(p.get("text") or "") for p in content or () if isinstance(p, dict) and "text" in p)


def last_input_text(context: list[dict[str, Any]]) -> str:
    """The text of the last user message in the conversation."""
    for item in reversed(context):
        if item.get("type") == "message" and item.get("role") == "user":
            return _text_of(item.get("content"))
    return ""


def responses_answer_text(body: dict[str, Any], context: list[dict[str, Any]]) -> str:
    """The default answer: the last user input echoed, as JSON when `text.format` asks for it."""
    text = "Echo: " + last_input_text(context)
    spec = (body.get("text") or {}).get("format") or {}
    if spec.get("type") == "json_object":
        if not any("json" in _text_of(item.get("content")).lower() for item in context
                   if item.get("type") == "message") and "json" not in str(body.get("instructions") or "").lower():
            raise Refused("Response input messages must contain the word 'json' in some form to use 'text.format' "
                          "of type 'json_object'.", "input")
        return json.dumps({"answer": text}, ensure_ascii=False)
    if spec.get("type") == "json_schema":
        return json.dumps(placeholder(spec["schema"]), ensure_ascii=False)
    return text


def responses_function_to_call(body: dict[str, Any], context: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The function tool the answer calls, or None: the named one, else the first unless the
    choice is "none", or "auto" right after a function's output."""
    functions = [t for t in body.get("tools") or () if t.get("type") == "function"]
    choice = body.get("tool_choice", "auto")
    if not functions or choice == "none":
        return None
    if isinstance(choice, dict):
        if choice.get("type") != "function":
            return None   # a hosted tool chosen
        return next(t for t in functions if t["name"] == choice["name"])
    if choice == "auto" and context and context[-1].get("type") == "function_call_output":
        return None
    return functions[0]


def searches_the_web(body: dict[str, Any]) -> bool:
    return body.get("tool_choice") != "none" and any(t.get("type") in WEB_SEARCH for t in body.get("tools") or ())


def responses_prompt_tokens(body: dict[str, Any], context: list[dict[str, Any]]) -> int:
    """Words of the instructions and of every item (its text, output or arguments), 3 an item."""
    words = len(str(body.get("instructions") or "").split())
    for item in context:
        said = item.get("content") if item.get("type") == "message" else item.get("output", item.get("arguments"))
        words += len(_text_of(said).split()) + 3
    return words


def echoed_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool as the response echoes it: a function tool with its defaults (strict, as OpenAI's are)."""
    if tool.get("type") != "function":
        return tool
    return {"description": None, "parameters": None, "strict": True, **tool}


def main() -> None:
    parser = argparse.ArgumentParser(description="fake OpenAI upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream chunks")
    args = parser.parse_args()
    upstream = FakeUpstream(args.host, args.port, knobs=Knobs(latency_s=args.latency, chunk_delay_s=args.chunk_delay))
    print(f"fake OpenAI upstream on {upstream.url}", flush=True)
    web.run_app(upstream.app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
