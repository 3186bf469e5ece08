"""Anthropic's Messages API inbound (`POST /v1/messages`): what the `anthropic` SDK and Claude Code send.

To a provider of type `anthropic` the request goes as it came (only `model` rewritten), and its
answer and stream come back untouched. To any other type it is read into the gateway's chat form
(`to_chat`: the reverse of the Anthropic adapter, gateway/providers/anthropic.py), and the chat
answer is written back as a Messages answer (`message`), its stream re-emitted as Messages events
(`ChatToEvents`), its errors in Anthropic's error shape (`error_body`).

Either way the pipeline reads the answer in the chat form: a native answer through the Anthropic
adapter's reading of it, a kept stream's events through `chat_chunks`, so usage, cost, the cache
and routing's checks work the same as for chat completions.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Iterable

import orjson

from ..errors import GatewayError, bad_request
from ..providers.anthropic import StreamTranslation, chat_completion
from ..providers.shape import unsupported
from ..providers.sse import complete_events, last_event_name
from .chat_events import replayed, rewritten

ENDPOINT = "messages"
GUARDS_OWN_STREAM = False   # a stream with output rules is filtered in its chat form (call.py)
GUARDED_PARAM = "messages"
PATH = "/v1/messages"
DONE_MARK = b"message_stop"   # the event a complete stream ends with

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               503: "overloaded_error", 529: "overloaded_error"}
# Request fields read into the chat form, and those that need Anthropic itself (refused elsewhere).
READ = {"model", "messages", "max_tokens", "system", "stop_sequences", "stream", "temperature", "top_p",
        "metadata", "tools", "tool_choice", "service_tier"}
ANTHROPIC_ONLY = {"top_k", "thinking", "container", "mcp_servers", "context_management"}


def cacheable(payload: dict[str, Any]) -> bool:
    """Whether the answer depends on the request alone: always, for Messages (no server-side state)."""
    return True


def completed(kept: list[bytes]) -> bool:
    """Whether a stream (its kept bytes) ended with message_stop."""
    return last_event_name(kept) == b"message_stop"


def guarded_text(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's text as chat-like messages, for the guardrails' input rules: the system
    prompt first, then the messages (a string or text blocks, as chat's text parts)."""
    system = payload.get("system")
    return ([{"role": "system", "content": system}] if system else []) + list(payload["messages"])


def with_guarded_text(payload: dict[str, Any], masked: list[dict[str, Any]]) -> dict[str, Any]:
    """The request with the text of `guarded_text` replaced (the same positions)."""
    if payload.get("system"):
        return {**payload, "system": masked[0]["content"], "messages": masked[1:]}
    return {**payload, "messages": masked}


def check(payload: dict[str, Any]) -> None:
    """What every Messages request must have, whoever answers it."""
    if type(payload.get("max_tokens")) is not int or payload["max_tokens"] < 1:
        raise bad_request("max_tokens: a positive integer is required.", "max_tokens")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages: at least one message is required.", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise bad_request(f"messages.{i}.role: must be 'user' or 'assistant' (a system prompt goes in "
                              "the top-level `system`).", f"messages.{i}.role")
        if not isinstance(message.get("content"), (str, list)):
            raise bad_request(f"messages.{i}.content: must be a string or an array of content blocks.",
                              f"messages.{i}.content")
    if payload.get("stream") is not None and not isinstance(payload["stream"], bool):
        raise bad_request("stream: must be a boolean.", "stream")


# ---- the request, in the chat form ---------------------------------------------------------------

def to_chat(payload: dict[str, Any], provider_type: str) -> dict[str, Any]:
    """The request as a chat completion request, for a provider that does not speak Messages."""
    for name in payload:
        if name in ANTHROPIC_ONLY or name not in READ:
            raise unsupported(provider_type, f"'{name}' (a Messages field only Anthropic takes)", name)
    messages: list[dict[str, Any]] = []
    system = payload.get("system")
    if system:
        messages.append({"role": "system", "content": _text(system, "system")})
    for i, message in enumerate(payload["messages"]):
        messages.extend(_chat_messages(message, f"messages.{i}"))
    chat: dict[str, Any] = {"model": payload["model"], "messages": messages, "max_tokens": payload["max_tokens"]}
    if payload.get("stream"):
        chat["stream"] = True
    if payload.get("stop_sequences"):
        chat["stop"] = payload["stop_sequences"]
    for name in ("temperature", "top_p"):
        if payload.get(name) is not None:
            chat[name] = payload[name]
    user = (payload.get("metadata") or {}).get("user_id") if isinstance(payload.get("metadata"), dict) else None
    if isinstance(user, str):
        chat["user"] = user
    chat.update(_tools(payload))
    return chat


def _chat_messages(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    role, content = message["role"], message["content"]
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if role == "assistant":
        return [_assistant(content, where)]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        at = f"{where}.content.{j}"
        if kind == "tool_result":   # a tool's result is a message of its own in the chat form
            out.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id")),
                        "content": _text(block.get("content", ""), at)})
        elif kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, at)}})
        else:
            raise bad_request(f"{at}: a '{kind}' block cannot be sent to this model's provider.", at)
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant(blocks: list[Any], where: str) -> dict[str, Any]:
    text, calls = [], []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append({"id": str(block.get("id")), "type": "function", "function": {
                "name": str(block.get("name")), "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        elif kind not in ("thinking", "redacted_thinking"):   # Anthropic's own: another provider cannot read them
            raise bad_request(f"{where}.content.{j}: a '{kind}' block cannot be sent to this model's provider.",
                              f"{where}.content.{j}")
    out: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        out["tool_calls"] = calls
    return out


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, block in enumerate(content):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise bad_request(f"{where}.{j}: only text blocks can be sent to this model's provider here.",
                                  f"{where}.{j}")
            texts.append(str(block.get("text", "")))
        return "".join(texts)
    raise bad_request(f"{where}: must be a string or an array of text blocks.", where)


def _image_url(block: dict[str, Any], where: str) -> str:
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return f"data:{source.get('media_type', 'image/png')};base64,{source['data']}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    raise bad_request(f"{where}.source: an image needs a base64 or url source.", f"{where}.source")


def _tools(payload: dict[str, Any]) -> dict[str, Any]:
    tools = payload.get("tools")
    if not tools:
        return {}
    functions = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or "input_schema" not in tool:
            raise unsupported("non-anthropic", f"tools.{i} (only custom tools with an input_schema)", f"tools.{i}")
        function = {"name": tool["name"], "parameters": tool["input_schema"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        functions.append({"type": "function", "function": function})
    out: dict[str, Any] = {"tools": functions}
    choice = payload.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}.get(kind) or \
            {"type": "function", "function": {"name": choice.get("name")}}
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    return out


def estimate_tokens(payload: dict[str, Any]) -> int:
    """About 4 characters a token over the prompt's text (system, messages, tools): what
    count_tokens answers when the provider cannot count, marked as an estimate."""
    def chars(value: Any) -> int:
        if isinstance(value, str):
            return len(value)
        if isinstance(value, list):
            return sum(chars(item) for item in value)
        if isinstance(value, dict):
            if value.get("type") in ("text", "tool_result", "tool_use"):
                return chars(value.get("text") or value.get("content") or "") + len(orjson.dumps(value.get("input", "")))
            return len(orjson.dumps(value))
        return 0

    total = chars(payload.get("system")) + sum(chars(m.get("content")) for m in payload.get("messages") or ()
                                                if isinstance(m, dict))
    total += len(orjson.dumps(payload.get("tools") or []))
    return max(1, total // 4)


# ---- the answer, in Messages' shape ---------------------------------------------------------------

def message(completion: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion as a Messages answer (its first choice: Messages has one)."""
    choice = (completion.get("choices") or [{}])[0]
    said = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if said.get("content"):
        content.append({"type": "text", "text": said["content"]})
    for call in said.get("tool_calls") or ():
        function = call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = {"arguments": function.get("arguments")}   # not JSON: kept, as text
        content.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": arguments})
    return {"id": _message_id(completion.get("id")), "type": "message", "role": "assistant",
            "model": completion.get("model"), "content": content,
            "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
            "stop_sequence": None, "usage": usage(completion.get("usage"))}


def completion(answer: dict[str, Any], model: str) -> dict[str, Any]:
    """Anthropic's own answer (a native call's) as the chat.completion the gateway reads."""
    return chat_completion(answer, model)


def render(completion: dict[str, Any], payload: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps(message(completion))


def usage(chat_usage: Any) -> dict[str, int]:
    """OpenAI's usage as Anthropic's: `input_tokens` without the cache's reads and writes."""
    chat_usage = chat_usage if isinstance(chat_usage, dict) else {}
    details = chat_usage.get("prompt_tokens_details") if isinstance(chat_usage.get("prompt_tokens_details"), dict) else {}
    read, written = int(details.get("cached_tokens") or 0), int(details.get("cache_write_tokens") or 0)
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    return {"input_tokens": max(prompt - read - written, 0), "output_tokens": int(chat_usage.get("completion_tokens") or 0),
            "cache_creation_input_tokens": written, "cache_read_input_tokens": read}


def _message_id(given: Any) -> str:
    given = str(given or "")
    return given if given.startswith("msg_") else "msg_" + (given.removeprefix("chatcmpl-") or str(time.time_ns()))


def error_body(status: int, openai_body: bytes) -> bytes:
    """An OpenAI-shaped error as Anthropic's: `{"type": "error", "error": {"type", "message"}}`."""
    try:
        error = orjson.loads(openai_body).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        error = {}
    message = error.get("message") if isinstance(error, dict) else None
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message or f"HTTP {status}"}})


def stream_error_event(message: str, kept: list[bytes] | None = None) -> bytes:
    return b"event: error\ndata: " + orjson.dumps({"type": "error", "error": {"type": "api_error",
                                                                            "message": message}}) + b"\n\n"


# ---- streams ---------------------------------------------------------------------------------------

def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"


class ChatToEvents:
    """A chat stream's chunks, re-emitted as Messages events: message_start at the first chunk,
    a text block for content deltas, a tool_use block per tool call (its arguments as
    input_json_delta), message_delta with the stop reason and usage, message_stop at `[DONE]`."""

    def __init__(self) -> None:
        self.started = False
        self.block = -1                   # the open block's index (-1: none)
        self.block_kind: str | None = None
        self.calls: dict[int, int] = {}   # a tool call's index -> its block's index
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: dict[str, Any]) -> bytes:
        out = []
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            return stream_error_event(str(error.get("message") or "the provider's stream failed"))
        if not self.started:
            self.started = True
            out.append(event("message_start", {"message": {
                "id": _message_id(chunk.get("id")), "type": "message", "role": "assistant",
                "model": chunk.get("model"), "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}))
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for part in chunk.get("choices") or ():
            if part.get("index", 0) != 0:
                continue   # Messages has one answer
            delta = part.get("delta") or {}
            if delta.get("content"):
                if self.block_kind != "text":
                    out.append(self._open("text", {"type": "text", "text": ""}))
                out.append(event("content_block_delta", {"index": self.block, "delta": {
                    "type": "text_delta", "text": delta["content"]}}))
            for call in delta.get("tool_calls") or ():
                index = call.get("index", 0)
                function = call.get("function") or {}
                if index not in self.calls:
                    out.append(self._open("tool_use", {"type": "tool_use", "id": call.get("id"),
                                                       "name": function.get("name"), "input": {}}))
                    self.calls[index] = self.block
                if function.get("arguments"):
                    out.append(event("content_block_delta", {"index": self.calls[index], "delta": {
                        "type": "input_json_delta", "partial_json": function["arguments"]}}))
            if part.get("finish_reason"):
                self.finish = part["finish_reason"]
        return b"".join(out)

    def end(self) -> bytes:
        """What follows the chat stream's `[DONE]`."""
        out = [self._close()] if self.block >= 0 else []
        usage_now = usage(self.usage)
        out.append(event("message_delta", {"delta": {"stop_reason": STOP_REASONS.get(self.finish or "stop", "end_turn"),
                                                     "stop_sequence": None}, "usage": usage_now}))
        out.append(event("message_stop", {}))
        return b"".join(out)

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        closing = self._close() if self.block >= 0 else b""
        self.block += 1
        self.block_kind = kind
        return closing + event("content_block_start", {"index": self.block, "content_block": block})

    def _close(self) -> bytes:
        self.block_kind = None
        return event("content_block_stop", {"index": self.block})


def render_stream(chat_sse: AsyncIterator[bytes], payload: dict[str, Any] | None = None) -> AsyncIterator[bytes]:
    """A chat stream (OpenAI SSE bytes) as this API's events, as it arrives."""
    return rewritten(chat_sse, ChatToEvents())


def replay(chat_sse: Iterable[bytes], payload: dict[str, Any] | None = None) -> list[bytes]:
    """A whole chat stream (a cached answer's) as this API's events."""
    return replayed(chat_sse, ChatToEvents())


def chat_chunks(kept: Iterable[bytes], model: str) -> list[bytes]:
    """A Messages stream's kept events as the chat chunks they amount to (for usage and the cache)."""
    translation, out = StreamTranslation(model), []
    for name, data in complete_events(kept):
        if name == "ping":
            continue
        try:
            found = orjson.loads(data)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(found, dict) or found.get("type", name) == "error":
            break
        try:
            chunk = translation.translate(found.get("type", name), found)
        except GatewayError:
            return []
        if chunk:
            out.append(chunk)
    return out
