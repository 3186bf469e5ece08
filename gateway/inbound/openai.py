"""OpenAI's request shapes: a chat completion or embeddings body, parsed once and checked.

The chat completion body is also the gateway's internal chat form: routing rules, the cache key,
usage estimates and providers all read the same fields.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import bad_request


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string.", "model")
    return payload


def check_chat(payload: dict[str, Any]) -> None:
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' is required and must be a non-empty array.", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request(f"messages[{i}] must be an object with a string 'role'.", f"messages[{i}]")
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", "stream")
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.", "stream_options")


def check_embeddings(payload: dict[str, Any]) -> None:
    given = payload.get("input")
    if not isinstance(given, (str, list)) or not given:
        raise bad_request("'input' is required and must be a string or a non-empty array.", "input")


def wants_usage(payload: dict[str, Any]) -> bool:
    """A streaming client that asked for the usage chunk (`stream_options.include_usage`)."""
    return bool(payload.get("stream") is True and (payload.get("stream_options") or {}).get("include_usage"))


def message_text(message: dict[str, Any]) -> str | None:
    """The plain text of a message, or None when it carries more than text (images, audio...)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    return None
