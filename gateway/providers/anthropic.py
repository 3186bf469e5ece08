"""The `anthropic` type: Anthropic's Messages API (`POST /v1/messages`) behind OpenAI's chat completions.

The request: system and developer messages become `system`; user, assistant and tool messages
become alternating user/assistant turns (a tool's result is a `tool_result` block of the user turn
that follows the assistant's `tool_use`; consecutive turns of one role are merged, as the API
requires); text and image parts, tools, tool_choice and parallel_tool_calls, the token limit (the
client's, else the model's `max_tokens`: the API requires one), stop, temperature, top_p, and
`user` as `metadata.user_id`. `response_format` (json_object, json_schema) is honoured the way
Anthropic documents for JSON output: one tool whose input schema is the format's, which the model
is made to call; its input comes back as the message's content. What the API has no place for
(`n` > 1, logprobs, seed, penalties, audio...) is refused with a 400 that names it.

The answer: text blocks to `content`, tool_use blocks to `tool_calls` (arguments as a JSON string),
`stop_reason` to `finish_reason`, and usage with the prompt cache: `prompt_tokens` counts the
cache reads and writes too (Anthropic's `input_tokens` does not), the details say how many of each.
A stream's events become OpenAI chunks as they arrive; an `error` event ends it with the gateway's
error event. Anthropic's errors come back in OpenAI's shape; 529 `overloaded_error` as 503, so
that retries and fallbacks take it as the provider being unavailable.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Mapping

import aiohttp
import orjson

from ..errors import bad_request
from . import shape
from .base import CHAT, Adapter, Call, Outgoing, StreamFailed, openai_error
from .shape import unsupported
from .sse import events

VERSION = "2023-06-01"
# The token limit when neither the client nor the model's entry sets one (the API requires one).
DEFAULT_MAX_TOKENS = 4096
# The tool that carries a JSON answer (`response_format`); its input is the answer.
JSON_TOOL = "json_answer"

FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "tool_use": "tool_calls",
          "max_tokens": "length", "model_context_window_exceeded": "length", "refusal": "content_filter"}

# Anthropic's error types, as an OpenAI client reads them: (status, OpenAI type, code).
ERRORS = {
    "invalid_request_error": (400, "invalid_request_error", None),
    "authentication_error": (401, "authentication_error", "invalid_api_key"),
    "permission_error": (403, "permission_error", None),
    "not_found_error": (404, "invalid_request_error", "not_found"),
    "request_too_large": (413, "invalid_request_error", "request_too_large"),
    "rate_limit_error": (429, "rate_limit_error", "rate_limit_exceeded"),
    "api_error": (500, "server_error", None),
    "overloaded_error": (503, "server_error", "overloaded"),
}

# OpenAI fields mapped below, and those with no effect on the answer that are let go.
MAPPED = {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "stop",
          "temperature", "top_p", "user", "tools", "tool_choice", "parallel_tool_calls", "response_format"}
IGNORED = {"store", "metadata", "service_tier", "prompt_cache_key", "safety_identifier"}
# Fields refused unless they hold the value that changes nothing.
NEUTRAL = {"n": (1,), "logprobs": (False,), "presence_penalty": (0, 0.0), "frequency_penalty": (0, 0.0)}


class AnthropicAdapter(Adapter):
    type = "anthropic"
    translates = True
    endpoints = frozenset({CHAT})

    def auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self.config.api_version or VERSION}
        if self.config.api_key:
            headers["x-api-key"] = self.config.api_key
        return headers

    native = frozenset({"messages", "count_tokens"})

    def request(self, call: Call) -> Outgoing:
        self.check(call.path)
        return Outgoing(self.config.base_url + "/v1/messages", orjson.dumps(self.body_of(call)),
                        self.request_headers(call.headers))

    def native_request(self, endpoint: str, call: Call) -> Outgoing:
        # A Messages request passes as it came (cache_control, thinking, betas and all).
        path = "/v1/messages/count_tokens" if endpoint == "count_tokens" else "/v1/messages"
        return Outgoing(self.config.base_url + path, orjson.dumps({**call.payload, "model": call.model}),
                        self.request_headers(call.headers))

    def request_headers(self, given: dict[str, str]) -> dict[str, str]:
        headers = {**given, **self.headers}
        client_auth = headers.pop("authorization", None)
        if "x-api-key" not in headers and client_auth and client_auth.lower().startswith("bearer "):
            headers["x-api-key"] = client_auth[7:]   # open mode: the client's own key, in Anthropic's header
        return headers

    def body_of(self, call: Call) -> dict[str, Any]:
        payload = call.payload
        shape.refuse_unknown(self.type, payload, MAPPED | IGNORED, NEUTRAL, call.optional)
        system, messages = turns(payload["messages"])
        limit = shape.max_tokens(payload) or call.pricing.max_tokens or DEFAULT_MAX_TOKENS
        body: dict[str, Any] = {"model": call.model, "max_tokens": limit, "messages": messages}
        if system:
            body["system"] = system
        if call.stream:
            body["stream"] = True
        stop = shape.stop_sequences(payload)
        if stop:
            body["stop_sequences"] = stop
        for name in ("temperature", "top_p"):
            if payload.get(name) is not None:
                body[name] = payload[name]
        if isinstance(payload.get("user"), str):
            body["metadata"] = {"user_id": payload["user"]}
        json_schema = answer_schema(payload)
        if json_schema is not None:
            if payload.get("tools"):
                raise unsupported(self.type, "response_format together with tools", "response_format")
            body["tools"] = [{"name": JSON_TOOL, "description": "Give the answer as this JSON.",
                              "input_schema": json_schema}]
            body["tool_choice"] = {"type": "tool", "name": JSON_TOOL}
        else:
            body.update(tools_of(payload))
        return body


    # ---- the answer ---------------------------------------------------------------------------

    def answer(self, path: str, data: dict[str, Any], call_model: str) -> dict[str, Any]:
        return chat_completion(data, call_model)

    def stream(self, response: aiohttp.ClientResponse, call_model: str) -> AsyncIterator[bytes]:
        return StreamTranslation(call_model).run(response)

    def error(self, status: int, raw: bytes, content_type: str, headers: Mapping[str, str]) -> tuple[int, bytes, str]:
        try:
            error = orjson.loads(raw).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            error = None
        if not isinstance(error, dict):
            message = raw[:500].decode("utf-8", "replace") or f"HTTP {status}"
            return openai_error(503 if status == 529 else status, f"Anthropic answered {status}: {message}",
                                "server_error" if status >= 500 else "invalid_request_error")
        kind = str(error.get("type"))
        mapped, openai_type, code = ERRORS.get(kind, (status, "server_error" if status >= 500 else
                                                      "invalid_request_error", None))
        return openai_error(mapped if kind in ERRORS else (503 if status == 529 else status),
                            str(error.get("message") or kind), openai_type, code or kind)


class StreamTranslation:
    """One stream's Anthropic events, as OpenAI chunks: kept per stream, read as events arrive."""

    def __init__(self, model: str):
        self.model = model
        self.chunks: shape.Chunks | None = None
        self.calls: dict[int, int] = {}     # a tool_use block's index -> its OpenAI tool call index
        self.json_block: int | None = None  # the block of the JSON answer's tool, if any
        self.usage: dict[str, Any] = {}
        self.finish: str | None = None

    async def run(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        async for name, data in events(response):
            if name == "ping":
                continue
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise StreamFailed(f"an event that is not JSON ({name})") from None
            if not isinstance(event, dict):
                continue
            kind = event.get("type", name)
            if kind == "error":
                error = event.get("error") or {}
                raise StreamFailed(f"{error.get('type', 'error')}: {error.get('message', '')}")
            out = self.translate(kind, event)
            if out:
                yield out
            if kind == "message_stop":
                return

    def translate(self, kind: str, event: dict[str, Any]) -> bytes | None:
        if kind == "message_start":
            message = event.get("message") or {}
            self.chunks = shape.Chunks(str(message.get("id") or shape.answer_id()),
                                       str(message.get("model") or self.model))
            self.usage.update(message.get("usage") or {})
            return self.chunks.delta({"role": "assistant", "content": ""})
        chunks = self.chunks
        if chunks is None:
            raise StreamFailed(f"the stream began with {kind}, not message_start")
        if kind == "content_block_start":
            block, index = event.get("content_block") or {}, event.get("index")
            if block.get("type") != "tool_use":
                return None
            if block.get("name") == JSON_TOOL:
                self.json_block = index
                return None
            call = self.calls[index] = len(self.calls)
            return chunks.delta({"tool_calls": [{"index": call, "id": block.get("id"), "type": "function",
                                                 "function": {"name": block.get("name"), "arguments": ""}}]})
        if kind == "content_block_delta":
            delta, index = event.get("delta") or {}, event.get("index")
            if delta.get("type") == "text_delta":
                return chunks.delta({"content": delta.get("text", "")})
            if delta.get("type") == "input_json_delta":
                partial = delta.get("partial_json", "")
                if index == self.json_block:
                    return chunks.delta({"content": partial}) if partial else None
                if index in self.calls and partial:
                    return chunks.delta({"tool_calls": [{"index": self.calls[index],
                                                         "function": {"arguments": partial}}]})
            return None   # thinking and signature deltas: not asked for, not passed on
        if kind == "message_delta":
            self.usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason:
                finish = FINISH.get(reason, "stop")
                self.finish = "stop" if finish == "tool_calls" and self.json_block is not None else finish
            return None
        if kind == "message_stop":
            return chunks.delta({}, self.finish or "stop") + chunks.usage(usage_of(self.usage)) + shape.DONE
        return None   # content_block_stop, and events this adapter does not know


def chat_completion(data: dict[str, Any], call_model: str) -> dict[str, Any]:
    """A Messages answer as the chat.completion it amounts to (ValueError: it is not one)."""
    blocks = data.get("content")
    if data.get("type") != "message" or not isinstance(blocks, list):
        raise ValueError("the body is not a message")
    text, calls, json_answer = [], [], None
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "tool_use" and block.get("name") == JSON_TOOL:
            json_answer = orjson.dumps(block.get("input") or {}).decode()
        elif kind == "tool_use":
            calls.append(shape.tool_call(str(block.get("id")), str(block.get("name")), block.get("input")))
    finish = FINISH.get(data.get("stop_reason") or "end_turn", "stop")
    if json_answer is not None:
        content, finish = json_answer, "stop" if finish == "tool_calls" else finish
    else:
        content = "".join(text) if text or not calls else None
    message = shape.message(content, calls)
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    return shape.completion(str(data.get("id") or shape.answer_id()), str(data.get("model") or call_model),
                            [choice], usage_of(data.get("usage") or {}))


# ---- the request's parts --------------------------------------------------------------------------

def turns(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The system prompt, and the user/assistant turns with their content blocks."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role, where = message["role"], f"messages[{i}]"
        if role in ("system", "developer"):
            system.append(shape.text_of(message.get("content"), where))
            continue
        if role == "user":
            blocks, turn = user_blocks(message.get("content"), where), "user"
        elif role == "assistant":
            blocks, turn = assistant_blocks(message, where), "assistant"
        elif role == "tool":
            blocks, turn = [tool_result(message, where)], "user"
        else:
            raise bad_request(f"{where}.role '{role}' is not one of system, developer, user, assistant, tool.",
                                    f"{where}.role")
        if not blocks:
            continue   # an empty turn (an assistant's empty content): the API refuses empty content
        if out and out[-1]["role"] == turn:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": turn, "content": blocks})
    for turn in out:   # a user turn's tool results come first, as the API requires
        turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    return "\n\n".join(system), out


def user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    blocks = []
    for i, part in enumerate(shape.parts(content, where)):
        kind = part["type"]
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": str(part["text"])})
        elif kind == "image_url":
            media_type, data = shape.image(part, f"{where}.content[{i}]")
            source = {"type": "url", "url": data} if media_type == "url" else \
                {"type": "base64", "media_type": media_type, "data": data}
            blocks.append({"type": "image", "source": source})
        else:
            raise unsupported("anthropic", f"A '{kind}' content part", f"{where}.content[{i}]")
    return blocks


def assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = shape.text_of(message.get("content"), where) if message.get("content") is not None else ""
    if text:
        blocks.append({"type": "text", "text": text})
    for id, name, arguments in shape.tool_calls(message, where):
        blocks.append({"type": "tool_use", "id": id, "name": name, "input": arguments})
    return blocks


def tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(message.get("tool_call_id"), str):
        raise bad_request(f"{where}.tool_call_id is required for a tool message.", f"{where}.tool_call_id")
    return {"type": "tool_result", "tool_use_id": message["tool_call_id"],
            "content": shape.text_of(message.get("content"), where)}


def tools_of(payload: dict[str, Any]) -> dict[str, Any]:
    """`tools` and `tool_choice` in Anthropic's shape (nothing when the client sent no tools)."""
    functions = shape.tools(payload)
    if not functions:
        return {}
    tools = [{"name": f["name"], "description": f.get("description") or "",
              "input_schema": f.get("parameters") or {"type": "object", "properties": {}}} for f in functions]
    for tool in tools:
        if not tool["description"]:
            del tool["description"]
    choice = shape.tool_choice(payload)
    if choice == "none":
        return {"tools": tools, "tool_choice": {"type": "none"}}
    picked: dict[str, Any] = {"type": "auto"} if choice in (None, "auto") else \
        {"type": "any"} if choice == "required" else {"type": "tool", "name": choice}
    if payload.get("parallel_tool_calls") is False:
        picked["disable_parallel_tool_use"] = True
    return {"tools": tools, "tool_choice": picked}


def answer_schema(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a `response_format` asks the answer to follow, or None for text."""
    response_format = payload.get("response_format")
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise bad_request("response_format.json_schema.schema must be an object.", "response_format")
        if schema.get("type") != "object":
            raise unsupported("anthropic", "A JSON schema whose root is not an object", "response_format")
        return schema
    raise bad_request("response_format.type must be text, json_object or json_schema.", "response_format")


def usage_of(usage: dict[str, Any]) -> dict[str, Any]:
    read = _count(usage.get("cache_read_input_tokens"))
    written = _count(usage.get("cache_creation_input_tokens"))
    return shape.usage(_count(usage.get("input_tokens")) + read + written, _count(usage.get("output_tokens")),
                       read, written)


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0
