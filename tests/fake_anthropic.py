"""A fake Anthropic Messages API (`POST /v1/messages`), written from Anthropic's public API reference
and strict where the real API is: it refuses a request without `x-api-key` or `anthropic-version`,
without `max_tokens`, with a `system` role inside `messages`, with fields the API does not know,
with empty content, with a `tool_result` that does not answer a `tool_use` of the turn just before
it (or a `tool_use` left without its result), with a temperature above 1, or a `tool_choice`
without tools, each with the API's own error shape and message.

It answers the way the API does: content blocks (text, or `tool_use` when tools are given and the
choice asks for one, its input filled from the tool's schema), `stop_reason` (end_turn,
stop_sequence, max_tokens, tool_use, refusal), usage with the prompt cache's reads and writes
(knobs), and streams with Anthropic's events (message_start, ping, content_block_start/delta/stop
with text and input_json deltas, message_delta with the usage, message_stop), paced by a knob. Its
error knobs answer each of the API's error types with its status, and a stream can end with an
`error` event or stop short of message_stop.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import dataclass, replace
from typing import Any

import orjson
from aiohttp import web

from .fake_upstream import FakeUpstream, Seen, argument_fragments, placeholder

API_KEY = "sk-ant-test"

ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
                "overloaded_error": 529}

FIELDS = {"model", "messages", "max_tokens", "system", "stop_sequences", "stream", "temperature", "top_p",
          "top_k", "metadata", "tools", "tool_choice", "thinking", "service_tier"}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MEDIA_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}


@dataclass
class Knobs:
    chunk_delay_s: float = 0.0        # between stream events
    error_type: str | None = None     # answer with this error type (its status)...
    error_times: int = -1             # ...for the next N requests (-1: always)
    retry_after: str | None = None
    reply: str | None = None          # the answer's text; default: "Echo: " and the last user text
    stop_reason: str | None = None    # force one (refusal, say)
    tool_uses: int = 1                # tool_use blocks in an answer that calls tools
    cache_read: int = 0               # usage.cache_read_input_tokens
    cache_write: int = 0              # usage.cache_creation_input_tokens
    stream_error_after: int = -1      # streams: an `error` event after N text deltas
    stream_stop_after: int = -1       # streams: end cleanly after N text deltas, without message_stop


class Refused(Exception):
    def __init__(self, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.kind = kind


class FakeAnthropic(FakeUpstream):
    """The OpenAI fake's server (thread, loop, counts, `seen`), answering Anthropic's API instead."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.knobs = Knobs()  # type: ignore[assignment]
        self._message_ids = itertools.count(1)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        super().reset()
        self.knobs = Knobs()  # type: ignore[assignment]

    def set(self, **knobs: Any) -> None:
        self.knobs = replace(self.knobs, **knobs)  # type: ignore[arg-type]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        return app

    async def count_tokens(self, request: web.Request) -> web.Response:
        """The API's token count: the body of a Messages request without max_tokens (or stream)."""
        self.calls += 1
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        self.seen.append(Seen(request.path, body if isinstance(body, dict) else {}, headers))
        try:
            if headers.get("x-api-key") != API_KEY:
                raise Refused("invalid x-api-key", "authentication_error")
            if not isinstance(body, dict):
                raise Refused("There was an issue with your request body: the body is not a JSON object")
            for name in ("max_tokens", "stream", "stop_sequences", "temperature", "top_p", "top_k", "metadata"):
                if name in body:
                    raise Refused(f"{name}: Extra inputs are not permitted")
            check({**body, "max_tokens": 1})
        except Refused as exc:
            return error(exc.kind, str(exc))
        return web.Response(body=orjson.dumps({"input_tokens": prompt_tokens(body)}), content_type="application/json")

    async def messages(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        raw = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self.seen.append(Seen(request.path, body if isinstance(body, dict) else {}, headers))
        knobs: Knobs = self.knobs  # type: ignore[assignment]
        try:
            if headers.get("x-api-key") != API_KEY:
                raise Refused("invalid x-api-key", "authentication_error")
            if not headers.get("anthropic-version"):
                raise Refused("anthropic-version: header is required")
            if not isinstance(body, dict):
                raise Refused("There was an issue with your request body: the body is not a JSON object")
            check(body)
        except Refused as exc:
            return error(exc.kind, str(exc))
        if knobs.error_type and knobs.error_times != 0:
            if knobs.error_times > 0:
                self.set(error_times=knobs.error_times - 1)
            return error(knobs.error_type, f"fake {knobs.error_type}", knobs.retry_after)
        message = self.answer(body, knobs)
        if body.get("stream"):
            return await self.stream(request, message, knobs)
        return web.Response(body=orjson.dumps(message), content_type="application/json")

    def answer(self, body: dict[str, Any], knobs: Knobs) -> dict[str, Any]:
        tool = tool_to_use(body)
        usage = {"input_tokens": prompt_tokens(body), "output_tokens": 0,
                 "cache_creation_input_tokens": knobs.cache_write, "cache_read_input_tokens": knobs.cache_read}
        if tool is not None:
            parallel = not (body.get("tool_choice") or {}).get("disable_parallel_tool_use")
            count = knobs.tool_uses if parallel else 1
            content = [{"type": "tool_use", "id": f"toolu_{next(self._call_ids):04d}", "name": tool["name"],
                        "input": placeholder(tool["input_schema"]) or {}} for _ in range(count)]
            usage["output_tokens"] = 10 * count
            stop_reason, stop_sequence = "tool_use", None
        else:
            text, stop_reason, stop_sequence = reply_text(body, knobs)
            content = [{"type": "text", "text": text}]
            usage["output_tokens"] = len(text.split())
        return {"id": f"msg_{next(self._message_ids):06d}", "type": "message", "role": "assistant",
                "model": body["model"], "content": content, "stop_reason": knobs.stop_reason or stop_reason,
                "stop_sequence": stop_sequence, "usage": usage}

    async def stream(self, request: web.Request, message: dict[str, Any], knobs: Knobs) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8",
                                           "cache-control": "no-cache"})
        await resp.prepare(request)

        async def send(name: str, data: dict[str, Any]) -> None:
            await resp.write(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")
            if knobs.chunk_delay_s:
                await asyncio.sleep(knobs.chunk_delay_s)

        start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {**message["usage"], "output_tokens": 1}}
        await send("message_start", {"type": "message_start", "message": start})
        await send("ping", {"type": "ping"})
        deltas = 0
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                await send("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "text", "text": ""}})
                for word in re.findall(r"\S+\s*|\s+", block["text"]):
                    if deltas == knobs.stream_error_after:
                        await send("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                        "message": "Overloaded"}})
                        return resp
                    if deltas == knobs.stream_stop_after:
                        await resp.write_eof()
                        return resp
                    await send("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "text_delta", "text": word}})
                    deltas += 1
            else:
                await send("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {**block, "input": {}}})
                for piece in argument_fragments(orjson.dumps(block["input"]).decode()):
                    await send("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "input_json_delta", "partial_json": piece}})
            await send("content_block_stop", {"type": "content_block_stop", "index": index})
        await send("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": message["stop_reason"],
                                               "stop_sequence": message["stop_sequence"]},
                                     "usage": {"output_tokens": message["usage"]["output_tokens"]}})
        await send("message_stop", {"type": "message_stop"})
        await resp.write_eof()
        return resp


def error(kind: str, message: str, retry_after: str | None = None) -> web.Response:
    headers = {"retry-after": retry_after} if retry_after else {}
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}
    return web.Response(body=orjson.dumps(body), status=ERROR_STATUS.get(kind, 500), headers=headers,
                        content_type="application/json")


# ---- what the API refuses ---------------------------------------------------------------------------

def check(body: dict[str, Any]) -> None:
    for name in body:
        if name not in FIELDS:
            raise Refused(f"{name}: Extra inputs are not permitted")
    if not isinstance(body.get("model"), str):
        raise Refused("model: Field required")
    if type(body.get("max_tokens")) is not int or body["max_tokens"] < 1:
        raise Refused("max_tokens: Field required" if "max_tokens" not in body else
                      "max_tokens: Input should be a valid integer greater than or equal to 1")
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
            raise Refused(f"{name}: Input should be less than or equal to 1")
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise Refused("system: Input should be a valid string or list")
    stop = body.get("stop_sequences")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) and s.strip() for s in stop)):
        raise Refused("stop_sequences: each stop sequence must contain non-whitespace")
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or set(metadata) - {"user_id"}):
        raise Refused("metadata: Extra inputs are not permitted")
    tools = check_tools(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Refused("messages: at least one message is required")
    turns = merged(messages)
    for i, (role, blocks) in enumerate(turns):
        if not blocks and not (role == "assistant" and i == len(turns) - 1):
            raise Refused(f"messages.{i}: all messages must have non-empty content except for the optional "
                          "final assistant message")
        for j, block in enumerate(blocks):
            check_block(block, role, f"messages.{i}.content.{j}", tools)
    for i, (role, blocks) in enumerate(turns):
        uses = [b["id"] for b in blocks if b.get("type") == "tool_use"]
        if uses:
            after = turns[i + 1][1] if i + 1 < len(turns) and turns[i + 1][0] == "user" else []
            answered = {b.get("tool_use_id") for b in after if b.get("type") == "tool_result"}
            missing = [u for u in uses if u not in answered]
            if missing:
                raise Refused(f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks "
                              f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                              "corresponding `tool_result` block in the next message.")
        results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
        if results:
            before = turns[i - 1][1] if i > 0 and turns[i - 1][0] == "assistant" else []
            used = {b.get("id") for b in before if b.get("type") == "tool_use"}
            for j, result in enumerate(results):
                if result not in used:
                    raise Refused(f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                                  f"blocks: {result}. Each `tool_result` block must have a corresponding "
                                  "`tool_use` block in the previous message.")
            kinds = [b.get("type") for b in blocks]
            if kinds[:len(results)] != ["tool_result"] * len(results):
                raise Refused(f"messages.{i}: tool_result blocks must come first in the content")


def merged(messages: list[Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The turns as the API reads them: consecutive messages of one role combined into one."""
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise Refused(f"messages.{i}: Input should be a valid dictionary")
        role = message.get("role")
        if role == "system":
            raise Refused('messages: Unexpected role "system". The Messages API accepts a top-level `system` '
                          "parameter, not \"system\" as an input message role.")
        if role not in ("user", "assistant"):
            raise Refused(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if isinstance(content, str):
            blocks = [{"type": "text", "text": content}] if content else []
        elif isinstance(content, list):
            blocks = content
        else:
            raise Refused(f"messages.{i}.content: Input should be a valid string or list")
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, list(blocks)))
    return turns


def check_block(block: Any, role: str, where: str, tools: set[str]) -> None:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text":
        if not isinstance(block.get("text"), str) or not block["text"]:
            raise Refused(f"{where}: text content blocks must be non-empty")
    elif kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            if source.get("media_type") not in MEDIA_TYPES or not isinstance(source.get("data"), str):
                raise Refused(f"{where}.source: media_type must be one of {sorted(MEDIA_TYPES)}")
        elif source.get("type") != "url" or not str(source.get("url", "")).startswith(("http://", "https://")):
            raise Refused(f"{where}.source: Input tag does not match the expected tags 'base64', 'url'")
    elif kind == "tool_use":
        if role != "assistant":
            raise Refused(f"{where}: tool_use blocks are only allowed in assistant messages")
        if not isinstance(block.get("id"), str) or not isinstance(block.get("input"), dict):
            raise Refused(f"{where}: tool_use blocks need an id and an input object")
    elif kind == "tool_result":
        if role != "user":
            raise Refused(f"{where}: tool_result blocks are only allowed in user messages")
        if not isinstance(block.get("content", ""), (str, list)):
            raise Refused(f"{where}.content: Input should be a valid string or list")
    else:
        raise Refused(f"{where}: Input tag '{kind}' does not match the expected tags")


def check_tools(body: dict[str, Any]) -> set[str]:
    tools = body.get("tools")
    names: set[str] = set()
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, dict) or not TOOL_NAME.match(str(tool.get("name", ""))):
            raise Refused(f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise Refused(f"tools.{i}.input_schema: Input should be an object with type 'object'")
        if set(tool) - {"name", "description", "input_schema", "cache_control", "type"}:
            raise Refused(f"tools.{i}: Extra inputs are not permitted")
        names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
            raise Refused("tool_choice: Input tag does not match the expected tags 'auto', 'any', 'tool', 'none'")
        if not names:
            raise Refused("tool_choice may only be specified while providing tools")
        if choice["type"] == "tool" and choice.get("name") not in names:
            raise Refused(f"tool_choice: tool '{choice.get('name')}' is not one of the tools")
    return names


# ---- what it answers --------------------------------------------------------------------------------

def tool_to_use(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {"type": "auto"}
    if not tools or choice["type"] == "none":
        return None
    if choice["type"] == "tool":
        return next(t for t in tools if t["name"] == choice["name"])
    last = body["messages"][-1]
    answered = isinstance(last.get("content"), list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in last["content"])
    if choice["type"] == "auto" and answered:
        return None
    return tools[0]


def reply_text(body: dict[str, Any], knobs: Knobs) -> tuple[str, str, str | None]:
    text = knobs.reply if knobs.reply is not None else "Echo: " + last_user_text(body)
    for stop in body.get("stop_sequences") or ():
        if stop in text:
            return text[:text.index(stop)], "stop_sequence", stop
    words = re.findall(r"\S+\s*", text)
    if len(words) > body["max_tokens"]:
        return "".join(words[:body["max_tokens"]]).rstrip(), "max_tokens", None
    return text, "end_turn", None


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body["messages"]):
        if message["role"] != "user":
            continue
        content = message["content"]
        if isinstance(content, str):
            return content
        texts = [b["text"] for b in content if b.get("type") == "text"]
        if texts:
            return " ".join(texts)
        results = [b for b in content if b.get("type") == "tool_result"]
        if results:
            result = results[-1].get("content")
            return "the tool said " + (result if isinstance(result, str) else orjson.dumps(result).decode())
    return ""


def prompt_tokens(body: dict[str, Any]) -> int:
    words = len(orjson.dumps(body.get("system", "")).split()) if body.get("system") else 0
    for message in body["messages"]:
        content = message["content"]
        words += len((content if isinstance(content, str) else orjson.dumps(content).decode()).split())
    return max(words, 1)
