"""The routing part of the config: shapes that load, and mistakes named with PATH:LINE."""

from __future__ import annotations

import textwrap

import pytest

from gateway.config import ConfigError, parse_config

BASE = """\
providers:
  a: {base_url: "http://127.0.0.1:9/v1"}
models:
  cheap: {provider: a, input_per_1m: 0.1, output_per_1m: 0.2}
  strong: {provider: a, input_per_1m: 5, output_per_1m: 15}
  unpriced: {provider: a}
"""


def load(routes: str, extra: str = ""):
    return parse_config(BASE + extra + "routes:\n" + textwrap.indent(textwrap.dedent(routes), "  "), "cfg.yaml")


def problems(routes: str, extra: str = "") -> list[str]:
    with pytest.raises(ConfigError) as err:
        load(routes, extra)
    return err.value.problems


def test_the_issue_example_loads():
    cfg = load("""\
        support:
          strategy: cascade
          targets: [cheap, strong]
          escalate_when: {finish_reason: [length], min_confidence: 0.70, invalid_json: true}
        chat:
          strategy: weighted
          targets: [{model: cheap, weight: 3}, {model: strong, weight: 1}]
        auto:
          rules:
            - when: {prompt_tokens_over: 4000}
              route: strong
            - when: {last_message_matches: "(?i)refund|退款|invoice"}
              route: support
            - when: {header: {x-tier: free}}
              route: cheap
          default: chat
        budgeted:
          strategy: cost
          targets: [strong, cheap]
          max_cost_usd: 0.002
        gpt-4: auto
        """, """\
retry:    {attempts: 2, backoff_s: 0.2, max_backoff_s: 5, on: [429, 500, 502, 503, 504, timeout, connect]}
fallback: {on: [429, 500, 502, 503, 504, timeout, connect]}
health:   {failures_to_open: 5, window_s: 30, cooldown_s: 15}
admin:    {key: sk-admin}
""")
    assert cfg.routes["gpt-4"].default == "auto"
    assert cfg.routes["chat"].target_weights() == [3, 1]
    assert cfg.retry.attempts == 2 and cfg.health.cooldown_s == 15 and cfg.admin.key == "sk-admin"


@pytest.mark.parametrize("routes, extra, line, words", [
    ("auto: {rules: [{when: {has_tools: true}, route: nowhere}], default: cheap}\n", "", 8,
     ["route 'auto' picks route 'nowhere', which is neither under routes: nor models:"]),
    ("auto: {default: chaep}\n", "", 8, ["picks route 'chaep'", "did you mean 'cheap'"]),
    ("a: {default: b}\nb: {rules: [{when: {has_tools: true}, route: a}], default: cheap}\n", "", 8,
     ["routes pick each other in a cycle: a -> b -> a"]),
    ("auto: {rules: [{when: {has_tools: true}, route: cheap}]}\n", "", 8, ["has rules but no default"]),
    ("auto: {rules: [{when: {}, route: cheap}], default: cheap}\n", "", 8, ["a rule needs at least one condition"]),
    ("auto: {rules: [{when: {last_message_matches: '(unclosed'}, route: cheap}], default: cheap}\n", "", 8,
     ["not a valid regular expression"]),
    ("auto: {default: cheap, targets: [cheap]}\n", "", 8, ["picks another route", "'targets' belongs on"]),
    ("s: {targets: [cheap, strong], escalate_when: {min_confidence: 0.5}}\n", "", 8,
     ["'escalate_when' only applies to strategy: cascade"]),
    ("s: {strategy: cascade, targets: [cheap]}\n", "", 8, ["a cascade needs at least two targets"]),
    ("s: {targets: [{model: cheap, weight: 2}]}\n", "", 8, ["'weight' only applies to strategy: weighted"]),
    ("s: {strategy: cost, targets: [cheap, unpriced]}\n", "", 8, ["model 'unpriced' has no prices"]),
    ("s: {strategy: fastest, targets: [cheap]}\n", "", 8, ["routes.s.strategy", "'first'"]),
    ("s: {targets: [cheap]}\n", "retry: {on: [404]}\n", 7, ["only 429 and 5xx"]),
    ("s: {targets: [cheap]}\n", "health: {failures_to_opne: 3}\n", 7, ["did you mean 'failures_to_open'"]),
])
def test_mistakes_name_their_line(routes, extra, line, words):
    found = problems(routes, extra)
    assert found[0].startswith(f"cfg.yaml:{line}: "), found
    for word in words:
        assert word in "\n".join(found), found


def test_route_cache_settings_still_work():
    cfg = load("a: {targets: [cheap], cache: off}\nb: {targets: [cheap], cache: {semantic: true}, strategy: latency}\n")
    assert cfg.routes["a"].cache.enabled is False and cfg.routes["b"].cache.semantic is True
