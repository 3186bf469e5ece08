"""The optional judge: one short chat call asking whether two requests need the same answer.

It is the last check before a semantic hit is served, for the candidates that passed the rule
veto. Verdicts are cached per (stored, incoming) pair, so a hot question pays for its judge call
once. Each call's usage is returned so the gateway can count it as spent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from cachetools import LRUCache

from ...config import JudgeConfig
from ...upstream.call import CallFailed, call_for_gateway
from ...upstream.target import Target


class JudgeError(Exception):
    """The judge could not give a verdict (down, slow, or an answer that is not a chat completion)."""


class JudgeBusy(JudgeError):
    """The judge model's provider has no free concurrency slot now: no verdict, and the judge is
    not taken for down."""


@dataclass(frozen=True, slots=True)
class Verdict:
    same: bool
    model: str
    usage: dict[str, Any] | None  # None when the verdict came from the cache (nothing spent)


class Judge(Protocol):
    model: str

    async def same_answer(self, stored: str, incoming: str, headers: dict[str, str] | None = None) -> Verdict: ...


SYSTEM_PROMPT = (
    "You check a cache of answers. Two requests to an assistant are given. Reply 'yes' only if one "
    "reply, word for word, would correctly answer both. Different numbers, dates, products, names, "
    "directions (A to B versus B to A), time frames, or a negation make the answers different: reply "
    "'no'. Reply with exactly one word: yes or no."
)


def judge_messages(stored: str, incoming: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Request A: {stored}\nRequest B: {incoming}\nSame reply for both?"},
    ]


def parse_verdict(payload: Any) -> bool:
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise JudgeError("the judge's answer is not a chat completion") from None
    if not isinstance(content, str):
        raise JudgeError("the judge's answer has no text")
    word = content.strip().strip(".!\"'").lower()
    # Anything but a clear yes is a no: a wrong hit costs more than a miss.
    return word.startswith("yes") or word == "y"


class LLMJudge:
    def __init__(self, target: Target, cache_size: int = 10_000):
        self.target = target
        self.model = target.model
        self._verdicts: LRUCache[tuple[str, str], bool] = LRUCache(maxsize=cache_size)

    async def same_answer(self, stored: str, incoming: str, headers: dict[str, str] | None = None) -> Verdict:
        key = (stored, incoming)
        cached = self._verdicts.get(key)
        if cached is not None:
            return Verdict(cached, self.model, None)
        body = {"messages": judge_messages(stored, incoming), "temperature": 0, "max_tokens": 1}
        try:
            payload = await call_for_gateway(self.target, "/chat/completions", body, headers)
        except CallFailed as exc:
            raise (JudgeBusy if exc.busy else JudgeError)(str(exc)) from None
        same = parse_verdict(payload)
        self._verdicts[key] = same
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
        return Verdict(same, self.model, usage)


def make_judge(config: JudgeConfig | None, targets: Mapping[str, Target]) -> Judge | None:
    if config is None:
        return None
    target = targets.get(config.model)
    if target is None:
        raise ValueError(f"the semantic cache's judge names model {config.model!r}, which is not under models:")
    return LLMJudge(target, cache_size=config.cache_size)
