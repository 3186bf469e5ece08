"""OpenAI's request shapes: a chat completion or embeddings body, parsed once and checked.

The chat completion body is also the gateway's internal chat form: routing rules, the cache key,
usage estimates and providers all read the same fields.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

import orjson

from ..errors import GatewayError, bad_request

# How deep a body may nest arrays and objects (its own object is level 1). Well under what orjson
# writes back (254 levels: the cache key and the upstream body are written with it) and reads
# (1,024); real requests, JSON schemas of tools and response formats included, nest a few dozen.
MAX_JSON_DEPTH = 128

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")   # +1 and -1 as signed bytes


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if nests_deeper(body, MAX_JSON_DEPTH):  # orjson refuses past 1,024 levels: say why
            raise too_deep() from None
        raise bad_request(f"The request body is not valid JSON: {exc}") from None
    if nests_deeper(body, MAX_JSON_DEPTH):
        raise too_deep()
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string.", "model")
    return payload


def nests_deeper(body: bytes, limit: int) -> bool:
    """Whether the JSON text `body` nests arrays and objects more than `limit` levels deep, read
    from its bytes rather than by walking what it parsed to. A body cannot nest deeper than it has
    opening brackets (half of its brackets, once balanced), so the usual body, with a few dozen,
    costs one pass of `translate` and no more; only a body with more is scanned for its real
    depth, its strings taken out first (a bracket in a string is text)."""
    if len(body.translate(None, _NOT_BRACKETS)) <= 2 * limit:
        return False
    steps = _outside_strings(body).translate(_STEPS, _NOT_BRACKETS)
    return max(accumulate(memoryview(steps).cast("b")), default=0) > limit


def _outside_strings(body: bytes) -> bytes:
    """The JSON text without its strings. In a string a backslash always escapes the next
    character, so once escaped backslashes (pairs, read left to right) and then escaped quotes are
    dropped, every quote left opens or closes a string. Twice as fast as a regular expression for
    strings on a body of many short ones (content parts, tool schemas)."""
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(body.split(b'"')[::2])


def too_deep() -> GatewayError:
    return bad_request(f"The request body nests arrays and objects too deep: the gateway accepts at most "
                       f"{MAX_JSON_DEPTH} levels.")


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


def strings_as_messages(value: Any) -> list[dict[str, Any]]:
    """A `prompt` or an embeddings `input` (a string, or a list of strings and token arrays) as
    chat-like messages for the guardrails' input rules: one per item, token arrays with no text."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [{"role": "user", "content": item if isinstance(item, str) else None} for item in items]


def with_strings(value: Any, masked: list[dict[str, Any]]) -> Any:
    """`value` with the text of `strings_as_messages` replaced (the same positions)."""
    if isinstance(value, str):
        return masked[0]["content"]
    return [m["content"] if isinstance(item, str) else item for item, m in zip(value, masked)]
