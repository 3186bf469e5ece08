"""Rules: a route that picks another route from what the request looks like (first match wins)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..config import RouteConfig, RuleConfig
from ..inbound.openai import message_text
from ..usage import estimate


class Facts:
    """What rules look at, each computed on first use and only once per request."""

    __slots__ = ("model", "payload", "headers", "_tokens", "_text")

    def __init__(self, model: str, payload: dict[str, Any], headers: Mapping[str, str]):
        self.model = model
        self.payload = payload
        self.headers = headers
        self._tokens: int | None = None
        self._text: str | None = None

    @property
    def prompt_tokens(self) -> int:
        if self._tokens is None:
            self._tokens = estimate(self.payload, None)["prompt_tokens"]
        return self._tokens

    @property
    def last_user_text(self) -> str:
        if self._text is None:
            self._text = ""
            for message in reversed(self.payload.get("messages") or ()):
                if isinstance(message, dict) and message.get("role") == "user":
                    self._text = message_text(message) or ""
                    break
        return self._text


@dataclass(frozen=True, slots=True)
class Rule:
    route: str
    when: dict[str, Any]            # as configured, for `gateway explain`
    prompt_tokens_over: int | None
    prompt_tokens_under: int | None
    pattern: re.Pattern[str] | None  # compiled once, at load
    headers: tuple[tuple[str, str], ...]
    metadata: tuple[tuple[str, Any], ...]
    has_tools: bool | None
    models: frozenset[str] | None

    @classmethod
    def compile(cls, config: RuleConfig) -> "Rule":
        when = config.when
        models = when.model_requested
        return cls(
            route=config.route,
            when=when.model_dump(exclude_unset=True),
            prompt_tokens_over=when.prompt_tokens_over,
            prompt_tokens_under=when.prompt_tokens_under,
            pattern=re.compile(when.last_message_matches) if when.last_message_matches is not None else None,
            headers=tuple((k.lower(), v) for k, v in (when.header or {}).items()),
            metadata=tuple((when.metadata or {}).items()),
            has_tools=when.has_tools,
            models=None if models is None else frozenset([models] if isinstance(models, str) else models),
        )

    def matches(self, facts: Facts) -> bool:
        # Cheapest checks first; the token estimate and the regex only run when still undecided.
        if self.models is not None and facts.model not in self.models:
            return False
        for name, value in self.headers:
            if facts.headers.get(name) != value:
                return False
        if self.has_tools is not None and bool(facts.payload.get("tools")) != self.has_tools:
            return False
        if self.metadata:
            metadata = facts.payload.get("metadata")
            if not isinstance(metadata, dict):
                return False
            for key, value in self.metadata:
                if metadata.get(key) != value:
                    return False
        if self.prompt_tokens_over is not None and not facts.prompt_tokens > self.prompt_tokens_over:
            return False
        if self.prompt_tokens_under is not None and not facts.prompt_tokens < self.prompt_tokens_under:
            return False
        if self.pattern is not None and self.pattern.search(facts.last_user_text) is None:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Picker:
    """A rules (or alias) route: its rules in order, and the route for requests no rule matches."""

    rules: tuple[Rule, ...]
    default: str | None

    @classmethod
    def compile(cls, config: RouteConfig) -> "Picker":
        return cls(tuple(Rule.compile(r) for r in config.rules), config.default)

    def pick(self, facts: Facts) -> tuple[str | None, int | None]:
        """The route picked and the index of the rule that picked it (None: the default)."""
        for i, rule in enumerate(self.rules):
            if rule.matches(facts):
                return rule.route, i
        return self.default, None


@dataclass(frozen=True, slots=True)
class Step:
    """One hop of a resolution, for `gateway explain`."""

    route: str
    picked: str
    rule: int | None            # index into the route's rules; None: its default
    when: dict[str, Any] | None
