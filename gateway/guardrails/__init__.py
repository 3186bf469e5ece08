"""Guardrails: rules that mask, block or flag text on the way into the model and out of it.

- `rules`: the `guardrails:` section compiled once (`compile_rules`), input rules applied to a
  request's messages (`apply_input`).
- `stream`: output rules on a streamed answer as it streams (`OutputFilter`) and on a whole answer
  (`filter_answer`).
- `detectors`: what each PII entity looks like; `matching`: when a match in a growing text is
  decided; `placeholders`: `<EMAIL_1>` and putting the original back.
"""

from typing import Any, Callable

from .detectors import ENTITIES
from .matching import MAX_MATCH, MAX_MATCH_LIMIT, Rule, check_pattern
from .placeholders import Masker, Restorer
from .rules import ACTIONS, KINDS, InputResult, RuleError, apply_input, compile_rule, compile_rules
from .stream import Filtered, Fired, OutputFilter, filter_answer


def masked(value: Any, mask: Callable[[str], str]) -> Any:
    """`mask` applied to every string of a JSON-like value (messages, an answer)."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [masked(item, mask) for item in value]
    if isinstance(value, dict):
        return {k: masked(v, mask) for k, v in value.items()}
    return value


def pii_mask():
    """Every PII entity masked (`<EMAIL_1>`...): one rule of the detectors, compiled once, as a
    function of a text. What the log (`log.content`) and traces (`tracing.content`) write."""
    rule = compile_rule("pii", {"kind": "pii", "entities": sorted(ENTITIES), "action": "mask"})
    return lambda text: filter_answer([rule], text).text

__all__ = [
    "ACTIONS", "ENTITIES", "KINDS", "MAX_MATCH", "MAX_MATCH_LIMIT", "Filtered", "Fired", "InputResult", "Masker",
    "OutputFilter", "Restorer", "Rule", "RuleError", "apply_input", "check_pattern", "compile_rule",
    "compile_rules", "filter_answer", "masked", "pii_mask",
]
