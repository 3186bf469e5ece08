"""OpenAI's shapes, for the adapters that translate: reading the client's request (content
parts, images, tool calls, stop, the token limit) and writing the answer (a chat.completion, its
stream's chunks, the usage object). One place, so that every provider type reads and writes them
the same way.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from typing import Any

import orjson

from ..errors import GatewayError, bad_request

DONE = b"data: [DONE]\n\n"


# ---- the request ----------------------------------------------------------------------------------

def parts(content: Any, where: str) -> list[dict[str, Any]]:
    """A message's content as a list of content parts (a string is one text part)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in content):
        return content
    raise bad_request(f"{where}.content must be a string or an array of content parts.", f"{where}.content")


def text_of(content: Any, where: str) -> str:
    """A message's text, for a field that takes only text (a system prompt, a tool result)."""
    out = []
    for i, part in enumerate(parts(content, where)):
        if part["type"] != "text" or not isinstance(part.get("text"), str):
            raise bad_request(f"{where}.content[{i}] must be a text part here.", f"{where}.content[{i}]")
        out.append(part["text"])
    return "".join(out)


def image(part: dict[str, Any], where: str) -> tuple[str, str]:
    """An image_url part: (media type, base64 data) for a data URL, ("url", the URL) for an
    http(s) one. Anything else is a 400."""
    url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) else None
    if not isinstance(url, str):
        raise bad_request(f"{where}.image_url.url must be a string.", f"{where}.image_url")
    if url.startswith("data:"):
        head, sep, data = url[5:].partition(",")
        media_type, _, encoding = head.partition(";")
        if not sep or encoding != "base64" or not media_type.startswith("image/"):
            raise bad_request(f"{where}.image_url.url must be a base64 data URL of an image "
                              "(data:image/png;base64,...).", f"{where}.image_url")
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(f"{where}.image_url.url is not valid base64.", f"{where}.image_url") from None
        return media_type, data
    if url.startswith(("http://", "https://")):
        return "url", url
    raise bad_request(f"{where}.image_url.url must be an http(s) URL or a data URL.", f"{where}.image_url")


def arguments(call: dict[str, Any], where: str) -> dict[str, Any]:
    """An assistant tool call's arguments (a JSON string in OpenAI's shape) as an object."""
    function = call.get("function") if isinstance(call.get("function"), dict) else {}
    raw = function.get("arguments")
    if raw in (None, ""):
        return {}
    try:
        value = orjson.loads(raw) if isinstance(raw, str) else None
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise bad_request(f"{where}.function.arguments must be a JSON object in a string.", f"{where}.function.arguments")
    return value


def tool_calls(message: dict[str, Any], where: str) -> list[tuple[str, str, dict[str, Any]]]:
    """An assistant message's tool calls: (id, function name, arguments as an object) each."""
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise bad_request(f"{where}.tool_calls must be an array.", f"{where}.tool_calls")
    out = []
    for j, call in enumerate(calls):
        here = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(call, dict) or not isinstance(call.get("id"), str) or not isinstance(name, str):
            raise bad_request(f"{here} must be a function tool call with an id and a name.", here)
        out.append((call["id"], name, arguments(call, here)))
    return out


def stop_sequences(payload: dict[str, Any]) -> list[str] | None:
    stop = payload.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return stop
    raise bad_request("'stop' must be a string or an array of strings.", "stop")


def max_tokens(payload: dict[str, Any]) -> int | None:
    """The client's token limit: max_completion_tokens, else the older max_tokens."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if value is not None:
            if type(value) is not int or value < 1:
                raise bad_request(f"'{name}' must be a positive integer.", name)
            return value
    return None


def tools(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The client's function tools: each {"name", "description"?, "parameters"?, "strict"?}."""
    given = payload.get("tools")
    if given is None:
        return []
    if not isinstance(given, list):
        raise bad_request("'tools' must be an array.", "tools")
    out = []
    for i, tool in enumerate(given):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request(f"tools[{i}] must be a function tool with a name.", f"tools[{i}]")
        out.append(function)
    return out


def tool_choice(payload: dict[str, Any]) -> str | None:
    """"auto", "required", "none", a function's name, or None when the client set none."""
    choice = payload.get("tool_choice")
    if choice is None or choice in ("auto", "required", "none"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict) \
            and isinstance(choice["function"].get("name"), str):
        return choice["function"]["name"]
    raise bad_request("'tool_choice' must be auto, required, none or {\"type\": \"function\", ...}.", "tool_choice")


def refuse_unknown(provider_type: str, payload: dict[str, Any], known: frozenset[str] | set[str],
                   neutral: dict[str, tuple[Any, ...]] | None = None, optional: frozenset[str] = frozenset(),
                   hints: dict[str, str] | None = None) -> None:
    """A 400 `unsupported_parameter` for the first field the provider type has no place for: any
    not in `known`, unless the gateway added it itself (`optional`: a provider leaves those out) or
    it holds a value in `neutral[name]`, one that asks for nothing (`n: 1`, `logprobs: false`)."""
    for name, value in payload.items():
        if value is None or name in known or name in optional:
            continue
        if any(value == v and type(value) is type(v) for v in (neutral or {}).get(name, ())):
            continue
        raise unsupported(provider_type, f"'{name}'{(hints or {}).get(name, '')}", name)


# ---- the answer -----------------------------------------------------------------------------------

def unsupported(provider_type: str, what: str, param: str) -> GatewayError:
    """A request field this provider type cannot honour: a clear 400, never a field silently dropped."""
    return GatewayError(400, f"{what} is not supported by this model's provider (type {provider_type}).",
                        "invalid_request_error", "unsupported_parameter", param)


def answer_id(prefix: str = "chatcmpl-") -> str:
    return prefix + os.urandom(12).hex()


def usage(prompt: int, completion: int, cache_read: int = 0, cache_write: int = 0) -> dict[str, Any]:
    """OpenAI's usage object. `prompt` counts every prompt token, those read from and written to
    the provider's prompt cache included (as OpenAI's does); the details say how many of each."""
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}
    if cache_read or cache_write:
        details: dict[str, int] = {"cached_tokens": cache_read}
        if cache_write:
            details["cache_write_tokens"] = cache_write
        out["prompt_tokens_details"] = details
    return out


def completion(id: str, model: str, choices: list[dict[str, Any]], usage: dict[str, Any] | None,
               created: int | None = None) -> dict[str, Any]:
    """A chat.completion; each choice {"index", "message", "finish_reason", "logprobs"}."""
    return {"id": id, "object": "chat.completion", "created": created or int(time.time()), "model": model,
            "system_fingerprint": None, "choices": choices, "usage": usage}


def message(content: str | None, tool_calls: list[dict[str, Any]] | None = None,
            refusal: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal}
    if tool_calls:
        out["tool_calls"] = tool_calls
    return out


def tool_call(id: str, name: str, arguments: Any) -> dict[str, Any]:
    """An answer's tool call, its arguments as a JSON string (an object from the provider is written)."""
    if not isinstance(arguments, str):
        arguments = orjson.dumps(arguments if arguments is not None else {}).decode()
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


class Chunks:
    """The chat.completion.chunk events of one streamed answer, written as SSE bytes."""

    __slots__ = ("head",)

    def __init__(self, id: str, model: str, created: int | None = None):
        self.head = {"id": id, "object": "chat.completion.chunk", "created": created or int(time.time()),
                     "model": model, "system_fingerprint": None}

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None, index: int = 0) -> bytes:
        return self.event([{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}])

    def usage(self, usage: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps({**self.head, "choices": [], "usage": usage}) + b"\n\n"

    def event(self, choices: list[dict[str, Any]]) -> bytes:
        return b"data: " + orjson.dumps({**self.head, "choices": choices}) + b"\n\n"
