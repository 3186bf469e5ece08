"""Token usage of an answer: the provider's own figures, or an estimate when it sent none."""

from __future__ import annotations

from typing import Any

from .inbound.openai import message_text


def estimate(payload: dict[str, Any], completion: dict[str, Any] | None) -> dict[str, int]:
    """About 4 characters a token: good enough to count, labelled `estimated` wherever it is used."""
    given = payload.get("messages")
    if given is None:   # a Responses request: `input`, a string or items
        given = payload.get("input") or ()
        if isinstance(given, str):
            given = [{"content": given}]
    prompt_chars = sum(len(message_text(m) or "") for m in given if isinstance(m, dict))
    completion_chars = 0
    for choice in (completion or {}).get("choices") or ():
        message = choice.get("message") or {}
        completion_chars += len(message.get("content") or "")
        for call in message.get("tool_calls") or ():
            completion_chars += len((call.get("function") or {}).get("arguments") or "")
    prompt, completion_tokens = max(1, prompt_chars // 4), completion_chars // 4
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def cache_writes(usage: dict[str, Any]) -> int:
    """Prompt tokens written to the provider's prompt cache (`prompt_tokens_details.cache_write_tokens`,
    what the Anthropic adapter reports): part of prompt_tokens, priced apart."""
    details = usage.get("prompt_tokens_details")
    return _count(details.get("cache_write_tokens")) if isinstance(details, dict) else 0


def token_counts(usage: dict[str, Any]) -> tuple[int, int, int]:
    """Prompt, completion and cached prompt tokens of an OpenAI usage object (0 for what is missing or bad)."""
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")), cached
