"""Guardrail rules: the `guardrails:` section compiled once, and input rules applied to a request.

```yaml
guardrails:
  pii:      {kind: pii, entities: [email, credit_card, cn_id], action: mask, restore: true}
  no-leaks: {kind: pattern, patterns: ["(?i)internal use only", "sk-[A-Za-z0-9]{20,}"], action: block}
```

A rule is a named list of matchers (one per entity or pattern) and one action: `mask` replaces a
match with a typed placeholder, `block` stops the request or the answer, `flag` only records that the
rule fired. What is reported is the rule's name and action, never the matched text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .detectors import DETECTORS, ENTITIES
from .matching import MAX_MATCH, MAX_MATCH_LIMIT, Matcher, Rule, detector_matcher, pattern_matcher
from .placeholders import Masker, Restorer
from .stream import Fired, filter_answer, merge_fired

KINDS = ("pii", "pattern")
ACTIONS = ("mask", "block", "flag")

_DETECTOR_MATCHERS = {entity: detector_matcher(d) for entity, d in DETECTORS.items()}
_LABEL = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
_FIELDS = {
    "pii": {"kind", "action", "entities", "restore"},
    "pattern": {"kind", "action", "patterns", "restore", "max_match", "placeholder"},
}


class RuleError(ValueError):
    """A rule the gateway refuses, with the reason in the user's words."""


def compile_rules(section: Mapping[str, Mapping[str, Any]]) -> dict[str, Rule]:
    """The `guardrails:` section (rule name -> fields), each rule compiled once."""
    return {name: compile_rule(name, spec) for name, spec in section.items()}


def compile_rule(name: str, spec: Mapping[str, Any]) -> Rule:
    if not isinstance(spec, Mapping):
        raise RuleError(f"guardrail {name!r}: a rule is a mapping of fields (kind, action, ...)")
    kind, action = spec.get("kind"), spec.get("action")
    if kind not in KINDS:
        raise RuleError(f"guardrail {name!r}: 'kind' must be one of {', '.join(KINDS)}, not {kind!r}")
    if action not in ACTIONS:
        raise RuleError(f"guardrail {name!r}: 'action' must be one of {', '.join(ACTIONS)}, not {action!r}")
    unknown = sorted(set(spec) - _FIELDS[kind])
    if unknown:
        raise RuleError(f"guardrail {name!r}: unknown field(s) {', '.join(unknown)} for kind {kind}")
    restore = spec.get("restore", False)
    if not isinstance(restore, bool):
        raise RuleError(f"guardrail {name!r}: 'restore' must be true or false")
    if restore and action != "mask":
        raise RuleError(f"guardrail {name!r}: 'restore: true' needs 'action: mask' (only masked values are put back)")
    if kind == "pii":
        return Rule(name, kind, action, _pii_matchers(name, spec.get("entities")), restore)
    return Rule(name, kind, action, _pattern_matchers(name, spec), restore)


def _pii_matchers(name: str, entities: Any) -> tuple[Matcher, ...]:
    if not isinstance(entities, list) or not entities:
        raise RuleError(f"guardrail {name!r}: 'entities' must be a non-empty list of {', '.join(ENTITIES)}")
    for entity in entities:
        if entity not in DETECTORS:
            raise RuleError(f"guardrail {name!r}: unknown entity {entity!r}; the entities are {', '.join(ENTITIES)}")
    # In the detectors' order of specificity, whatever order the rule lists them in.
    return tuple(_DETECTOR_MATCHERS[e] for e in ENTITIES if e in entities)


def _pattern_matchers(name: str, spec: Mapping[str, Any]) -> tuple[Matcher, ...]:
    patterns = spec.get("patterns")
    if not isinstance(patterns, list) or not patterns:
        raise RuleError(f"guardrail {name!r}: 'patterns' must be a non-empty list of regular expressions")
    max_match = spec.get("max_match", MAX_MATCH)
    if isinstance(max_match, bool) or not isinstance(max_match, int) or not 1 <= max_match <= MAX_MATCH_LIMIT:
        raise RuleError(f"guardrail {name!r}: 'max_match' must be an integer from 1 to {MAX_MATCH_LIMIT}")
    label = spec.get("placeholder", placeholder_type(name))
    if not isinstance(label, str) or not _LABEL.fullmatch(label):
        raise RuleError(f"guardrail {name!r}: 'placeholder' must be upper-case letters, digits and _, "
                        "starting with a letter, at most 32 characters")
    matchers = []
    for i, pattern in enumerate(patterns):
        try:
            matchers.append(pattern_matcher(pattern, label, max_match))
        except ValueError as exc:
            raise RuleError(f"guardrail {name!r}: patterns[{i}]: {exc}") from None
    return tuple(matchers)


def placeholder_type(rule_name: str) -> str:
    """A pattern rule's placeholder type from its name: `no-leaks` masks as <NO_LEAKS_1>."""
    label = re.sub(r"[^A-Z0-9]+", "_", rule_name.upper()).strip("_")
    if not label or not label[0].isalpha():
        label = "MATCH_" + label if label else "MATCH"
    return label[:32].rstrip("_")


@dataclass(frozen=True, slots=True)
class InputResult:
    messages: list[dict[str, Any]]    # the request's messages, masked (the same list when nothing was)
    fired: list[Fired]                # the rules that fired, in the order they first did
    blocked: str | None               # the rule that blocked the request, or None
    masker: Masker                    # the request's placeholders: pass it on to the output filter
    restorer: Restorer | None         # restorable placeholders, when a `restore: true` rule masked any


def apply_input(rules: Sequence[Rule], messages: list[dict[str, Any]], masker: Masker | None = None) -> InputResult:
    """Input rules over the text of every message (string content and the text parts of a list
    content; tool-call arguments, images and audio are left alone). The first block stops."""
    masker = masker or Masker()
    if not rules:
        return InputResult(messages, [], None, masker, None)
    fired: list[Fired] = []
    out = messages
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        new_content: Any = content
        if isinstance(content, str):
            result = filter_answer(rules, content, masker)
            fired = merge_fired(fired, result.fired)
            if result.blocked:
                return InputResult(messages, fired, result.blocked, masker, None)
            if result.text != content:
                new_content = result.text
        elif isinstance(content, list):
            parts = content
            for j, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                    result = filter_answer(rules, part["text"], masker)
                    fired = merge_fired(fired, result.fired)
                    if result.blocked:
                        return InputResult(messages, fired, result.blocked, masker, None)
                    if result.text != part["text"]:
                        if parts is content:
                            parts = list(content)
                        parts[j] = {**part, "text": result.text}
            new_content = parts
        if new_content is not content:
            if out is messages:
                out = list(messages)
            out[i] = {**message, "content": new_content}
    return InputResult(out, fired, None, masker, masker.restorer())
