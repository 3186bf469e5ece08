"""OpenAI's legacy completions (`POST /v1/completions`: a `prompt`, text back) inbound.

Only `openai` and `azure` providers serve them: the request goes as it came (only `model`
rewritten), its answer and stream come back untouched, and to any other provider type it is a
400. The gateway reads the answer in the chat form (`completion`, `chat_chunks`) for usage, cost
and the cache; a cached answer is written back as a `text_completion` (`render`, `replay`).
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterable

import orjson

from ..errors import bad_request, error_body as openai_error_body
from .openai import strings_as_messages, with_strings
from ..providers import shape
from ..providers.shape import unsupported
from ..providers.sse import complete_events

ENDPOINT = "completions"
PATH = "/v1/completions"
# Output guardrails read a stream's text in its own chunks (`choices[].text`), as it goes natively.
GUARDS_OWN_STREAM = True
GUARDED_PARAM = "prompt"


def guarded_text(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The prompt's strings as messages, for the guardrails' input rules (token arrays left alone)."""
    return strings_as_messages(payload.get("prompt"))


def with_guarded_text(payload: dict[str, Any], masked: list[dict[str, Any]]) -> dict[str, Any]:
    return {**payload, "prompt": with_strings(payload["prompt"], masked)}


def check(payload: dict[str, Any]) -> None:
    prompt = payload.get("prompt")
    if not isinstance(prompt, (str, list)) or (isinstance(prompt, list) and not prompt):
        raise bad_request("'prompt' is required: a string, an array of strings or of token arrays.", "prompt")
    if payload.get("stream") is not None and not isinstance(payload["stream"], bool):
        raise bad_request("'stream' must be a boolean.", "stream")


def cacheable(payload: dict[str, Any]) -> bool:
    return True


def to_chat(payload: dict[str, Any], provider_type: str) -> dict[str, Any]:
    raise unsupported(provider_type, "Legacy completions (/v1/completions; openai and azure providers serve them)",
                      "model")


def completion(answer: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    """A text_completion as the chat.completion it amounts to."""
    choices = answer.get("choices")
    if answer.get("object") != "text_completion" or not isinstance(choices, list):
        raise ValueError("the body is not a text_completion")
    chat_choices = [{"index": c.get("index", i), "message": shape.message(str(c.get("text") or "")),
                     "logprobs": None, "finish_reason": c.get("finish_reason")}
                    for i, c in enumerate(choices) if isinstance(c, dict)]
    return shape.completion(str(answer.get("id") or shape.answer_id("cmpl-")), str(answer.get("model") or model or ""),
                            chat_choices, answer.get("usage"), answer.get("created"))


def _text_completion(completion: dict[str, Any]) -> dict[str, Any]:
    return {"id": completion.get("id"), "object": "text_completion", "created": completion.get("created"),
            "model": completion.get("model"), "system_fingerprint": completion.get("system_fingerprint"),
            "choices": [{"text": (c.get("message") or {}).get("content") or "", "index": c.get("index", 0),
                         "logprobs": None, "finish_reason": c.get("finish_reason")}
                        for c in completion.get("choices") or ()],
            "usage": completion.get("usage")}


def render(completion: dict[str, Any], payload: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps(_text_completion(completion))


def render_stream(chat_sse: AsyncIterator[bytes], payload: dict[str, Any] | None = None) -> AsyncIterator[bytes]:
    return chat_sse   # never asked for: a translated request is refused first (to_chat)


def replay(chat_sse: Iterable[bytes], payload: dict[str, Any] | None = None) -> list[bytes]:
    """A cached answer's chat stream as the legacy stream: text chunks, the usage one, [DONE]."""
    out = []
    for _, data in complete_events(chat_sse):
        if data == b"[DONE]":
            break
        chunk = orjson.loads(data)
        choices = [{"text": (c.get("delta") or {}).get("content") or "", "index": c.get("index", 0), "logprobs": None,
                    "finish_reason": c.get("finish_reason")} for c in chunk.get("choices") or ()]
        if choices and not any(c["text"] or c["finish_reason"] for c in choices):
            continue   # the role chunk: the legacy stream has none
        event = {"id": chunk.get("id"), "object": "text_completion", "created": chunk.get("created"),
                 "model": chunk.get("model"), "choices": choices}
        if chunk.get("usage"):
            event["usage"] = chunk["usage"]
        out.append(b"data: " + orjson.dumps(event) + b"\n\n")
    return out + [shape.DONE]


def chat_chunks(kept: Iterable[bytes], model: str) -> list[bytes]:
    """A legacy stream's kept events as chat chunks (text as content deltas), for usage and the cache."""
    out = []
    for _, data in complete_events(kept):
        if data == b"[DONE]":
            out.append(shape.DONE)
            break
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(chunk, dict) or "error" in chunk:
            break
        head = shape.Chunks(str(chunk.get("id") or ""), str(chunk.get("model") or model), chunk.get("created"))
        choices = [{"index": c.get("index", 0), "delta": {"content": c.get("text") or ""}, "logprobs": None,
                    "finish_reason": c.get("finish_reason")} for c in chunk.get("choices") or () if isinstance(c, dict)]
        out.append(head.event(choices) if choices or not chunk.get("usage") else head.usage(chunk["usage"]))
    return out


def completed(kept: list[bytes]) -> bool:
    return b"[DONE]" in b"".join(kept[-2:])[-32:]


def error_body(status: int, openai_body: bytes) -> bytes:
    return openai_body   # OpenAI's shape already


def stream_error_event(message: str, kept: list[bytes] | None = None) -> bytes:
    return b"data: " + openai_error_body(message, "api_error", "upstream_stream_error") + b"\n\n"
