"""Cascade: is an answer good enough, or should the next (stronger) target be asked?"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from ..config import EscalateWhen

JSON_FORMATS = frozenset({"json_object", "json_schema"})


@dataclass(frozen=True, slots=True)
class Escalate:
    finish_reasons: frozenset[str]
    min_confidence: float | None
    invalid_json: bool
    empty: bool

    @classmethod
    def from_config(cls, config: EscalateWhen | None) -> "Escalate":
        config = config or EscalateWhen()
        return cls(frozenset(config.finish_reason), config.min_confidence, config.invalid_json, config.empty)


def wants_json(payload: dict[str, Any]) -> bool:
    fmt = payload.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in JSON_FORMATS


def confidence(choice: dict[str, Any]) -> float | None:
    """Mean token probability of a choice, from its logprobs (None when the upstream sent none)."""
    logprobs = choice.get("logprobs")
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not tokens:
        return None
    probs = [math.exp(t["logprob"]) for t in tokens if isinstance(t, dict) and isinstance(t.get("logprob"), (int, float))]
    return sum(probs) / len(probs) if probs else None


def problem(escalate: Escalate, json_wanted: bool, completion: dict[str, Any]) -> str | None:
    """Why this answer is not accepted (`finish_reason:length`, `low_confidence`, `invalid_json`,
    `empty`), or None when it is."""
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices:
        return "empty" if escalate.empty else None
    for choice in choices:
        if not isinstance(choice, dict):
            return "empty" if escalate.empty else None
        reason = choice.get("finish_reason")
        if reason in escalate.finish_reasons:
            return f"finish_reason:{reason}"
        message = choice.get("message") or {}
        content = message.get("content")
        if escalate.empty and not (isinstance(content, str) and content.strip()) and not message.get("tool_calls"):
            return "empty"
        if json_wanted and escalate.invalid_json and isinstance(content, str):
            try:
                orjson.loads(content)
            except orjson.JSONDecodeError:
                return "invalid_json"
        if escalate.min_confidence is not None:
            mean = confidence(choice)
            if mean is not None and mean < escalate.min_confidence:
                return "low_confidence"
    return None


def strip_logprobs(completion: dict[str, Any]) -> None:
    """Remove the logprobs the gateway asked for and the client did not (as OpenAI: `null`)."""
    for choice in completion.get("choices") or ():
        if isinstance(choice, dict) and "logprobs" in choice:
            choice["logprobs"] = None
