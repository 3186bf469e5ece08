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
    logprob: float | None = None     # per-token logprob when the request asks for logprobs


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

    # ---- control -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def reset(self) -> None:
        self.knobs = Knobs()
        self.calls = self.in_flight = self.max_in_flight = self.disconnects = 0
        self._generation += 1
        self.seen.clear()

    def set(self, **knobs: Any) -> None:
        self.knobs = replace(self.knobs, **knobs)

    def calls_to(self, path: str) -> int:
        return sum(1 for s in self.seen if s.path == path)

    # ---- the server ----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
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
