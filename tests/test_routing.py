"""Strategies and rules against three fake providers: each picks what it should."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from .conftest import eventually
from .routing_fakes import MESSAGES, burst, chat, fakes, fakes_started, routing_config, tap  # noqa: F401


def test_first_calls_targets_in_order(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, {"support": {"targets": ["cheap-model", "mid-model"]}}))
    for _ in range(3):
        raw, answer = chat(gw, "support")
        assert raw.headers["x-gateway-route"] == "support"
        assert raw.headers["x-gateway-target"] == "cheap-model"
    assert answer.choices[0].message.content == "Echo: How long does a refund take?"
    assert (fakes["cheap"].calls, fakes["mid"].calls) == (3, 0)
    assert fakes["cheap"].seen[0].body["model"] == "cheap-model"
    assert fakes["cheap"].seen[0].headers["authorization"] == "Bearer sk-cheap"


async def test_weighted_splits_by_weight_over_1000_requests(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, {"chat": {
        "strategy": "weighted", "targets": [{"model": "cheap-model", "weight": 3}, {"model": "mid-model", "weight": 1}]}}))
    body = {"model": "chat", "messages": MESSAGES}
    results = await burst(gw.url, [body] * 1000)
    assert all(status == 200 for status, _ in results)
    cheap = sum(1 for _, target in results if target == "cheap-model")
    # Expected 750; the standard deviation of a 3:1 split over 1,000 is about 14.
    assert 690 <= cheap <= 810, cheap
    assert fakes["cheap"].calls == cheap and fakes["mid"].calls == 1000 - cheap


def test_weighted_leaves_out_a_target_whose_circuit_is_open(start_gateway, fakes):
    gw = start_gateway(routing_config(
        fakes, {"chat": {"strategy": "weighted", "targets": [{"model": "cheap-model", "weight": 100},
                                                              {"model": "mid-model", "weight": 1}]}},
        health={"failures_to_open": 1, "window_s": 30, "cooldown_s": 30}))
    fakes["cheap"].set(error_status=500, error_times=1)
    raw, _ = chat(gw, "chat")  # cheap fails (circuit opens), mid answers as the fallback
    assert raw.headers["x-gateway-target"] == "mid-model"
    for _ in range(10):
        assert chat(gw, "chat")[0].headers["x-gateway-target"] == "mid-model"
    assert fakes["cheap"].calls == 1


async def test_least_busy_avoids_the_busy_provider(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, {"lb": {"strategy": "least-busy", "targets": ["cheap-model", "mid-model"]}}))
    assert chat(gw, "lb")[0].headers["x-gateway-target"] == "cheap-model"  # idle: the listed order decides
    client = gw.async_client(timeout=30)
    slow = [asyncio.create_task(client.chat.completions.create(
        model="cheap-model", messages=MESSAGES, extra_body={"fake": {"latency_s": 1.0}})) for _ in range(4)]
    cheap_limiter = gw.runtime.providers["cheap"].limiter
    for _ in range(200):
        if cheap_limiter.in_flight == 4:
            break
        await asyncio.sleep(0.01)
    assert cheap_limiter.in_flight == 4
    targets = []
    for _ in range(5):
        raw = await client.chat.completions.with_raw_response.create(model="lb", messages=MESSAGES)
        targets.append(raw.headers["x-gateway-target"])
    assert targets == ["mid-model"] * 5
    await asyncio.gather(*slow)
    await client.close()
    assert chat(gw, "lb")[0].headers["x-gateway-target"] == "cheap-model"


def test_latency_prefers_the_fast_target_and_moves_off_one_that_slows(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, {"fast": {"strategy": "latency", "targets": ["cheap-model", "mid-model"]}}))
    fakes["cheap"].set(latency_s=0.2)
    targets = [chat(gw, "fast")[0].headers["x-gateway-target"] for _ in range(12)]
    # Both unknown at first: each explored once (listed order), then the faster one only.
    assert targets[:2] == ["cheap-model", "mid-model"]
    assert targets[2:] == ["mid-model"] * 10
    fakes["mid"].set(latency_s=0.5)  # the fast one slows down: its average climbs past the other's
    moved = [chat(gw, "fast")[0].headers["x-gateway-target"] for _ in range(4)]
    assert "cheap-model" in moved, moved


def test_latency_with_many_targets_spreads_by_two_choices(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, {"fast": {
        "strategy": "latency", "targets": ["cheap-model", "mid-model", "strong-model"]}}))
    fakes["strong"].set(latency_s=0.3)
    for _ in range(30):
        chat(gw, "fast")
    # The slowest target is never the better of two choices once known: one exploration only.
    assert fakes["strong"].calls == 1
    assert fakes["cheap"].calls > 0 and fakes["mid"].calls > 0


COST_ROUTES = {
    # listed best first: the most capable target the budget allows
    "budgeted": {"strategy": "cost", "targets": ["strong-model", "mid-model", "cheap-model"], "prefer": "listed"},
    "frugal": {"strategy": "cost", "targets": ["strong-model", "mid-model", "cheap-model"], "max_cost_usd": 0.02},
    "capped": {"strategy": "cost", "targets": ["strong-model", "mid-model", "cheap-model"], "prefer": "listed",
               "max_cost_usd": 0.002},
    "lenient": {"strategy": "cost", "targets": ["strong-model", "mid-model"], "max_cost_usd": 0.000001,
                "over_budget": "cheapest"},
}


COST_CASES = [
    # max_tokens 1000: strong ~ $0.015, mid ~ $0.0015, cheap ~ $0.0002 (+ a few prompt tokens)
    ("budgeted", "0.05", "strong-model"),
    ("budgeted", "0.002", "mid-model"),
    ("budgeted", "0.0005", "cheap-model"),
    ("budgeted", None, "strong-model"),          # no budget at all: the first listed
    ("frugal", None, "cheap-model"),             # default preference: the cheapest that fits
    ("capped", "1.0", "mid-model"),              # the header lowers a route's budget, never raises it
    ("capped", "0.0005", "cheap-model"),
    ("lenient", None, "mid-model"),              # nothing fits: the cheapest, as the route says
]


def test_cost_picks_by_budget(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, COST_ROUTES))
    records = tap(gw)
    for i, (route, budget, expected) in enumerate(COST_CASES, 1):
        headers = {"x-gateway-max-cost-usd": budget} if budget else None
        raw, _ = chat(gw, route, max_tokens=1000, extra_headers=headers)
        assert raw.headers["x-gateway-target"] == expected, (route, budget)
        assert eventually(lambda: len(records.records) == i)
        # Routing saved money when a cheaper target answered than the route's most expensive one.
        assert records.records[-1].baseline_model == (None if expected == "strong-model" else "strong-model")


def test_cost_over_budget_is_a_402_that_says_so(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, COST_ROUTES))
    with pytest.raises(openai.APIStatusError) as err:
        chat(gw, "budgeted", max_tokens=1000, extra_headers={"x-gateway-max-cost-usd": "0.0001"})
    assert err.value.status_code == 402
    assert err.value.code == "budget_exceeded"
    assert "cheapest, 'cheap-model'" in err.value.message and "$0.00010000" in err.value.message
    assert sum(f.calls for f in fakes.values()) == 0
    with httpx.Client(base_url=gw.url) as http:
        r = http.post("/v1/chat/completions", json={"model": "budgeted", "messages": MESSAGES},
                      headers={"x-gateway-max-cost-usd": "lots"})
    assert r.status_code == 400 and "x-gateway-max-cost-usd" in r.json()["error"]["message"]


RULES = {
    "auto": {
        "rules": [
            {"when": {"model_requested": "gpt-4"}, "route": "strong-model"},
            {"when": {"prompt_tokens_over": 200}, "route": "strong-model"},
            {"when": {"last_message_matches": "(?i)refund|退款|invoice"}, "route": "support"},
            {"when": {"header": {"x-tier": "free"}}, "route": "cheap-model"},
            {"when": {"metadata": {"team": "research"}}, "route": "mid-model"},
            {"when": {"has_tools": True}, "route": "strong-model"},
            {"when": {"prompt_tokens_under": 3}, "route": "cheap-model"},
        ],
        "default": "chat",
    },
    "gpt-4": "auto",                       # an alias
    "support": {"targets": ["mid-model"]},
    "chat": {"targets": ["cheap-model", "mid-model"]},
}

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


RULE_CASES = [
    ("gpt-4", "Tell me about the weather today", {}, "strong-model", "strong-model"),
    ("auto", "word " * 1000, {}, "strong-model", "strong-model"),
    ("auto", "I want a REFUND please", {}, "support", "mid-model"),
    ("auto", "我想退款, thank you", {}, "support", "mid-model"),
    ("auto", "Tell me about the weather today", {"extra_headers": {"x-tier": "free"}}, "cheap-model", "cheap-model"),
    ("auto", "Tell me about the weather today", {"metadata": {"team": "research"}}, "mid-model", "mid-model"),
    ("auto", "Tell me about the weather today", {"tools": TOOLS}, "strong-model", "strong-model"),
    ("auto", "hi", {}, "cheap-model", "cheap-model"),
    ("auto", "Tell me about the weather today", {}, "chat", "cheap-model"),   # no rule: the default
]


def test_rules_pick_the_route(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, RULES))
    for model, content, kw, route, target in RULE_CASES:
        raw, _ = chat(gw, model, [{"role": "user", "content": content}], **kw)
        assert (raw.headers["x-gateway-route"], raw.headers["x-gateway-target"]) == (route, target), (model, content, kw)


def test_the_cache_key_names_the_route_the_rules_picked(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, RULES))
    records = tap(gw)
    messages = [{"role": "user", "content": "Where is my invoice?"}]
    first, _ = chat(gw, "auto", messages, temperature=0)
    assert first.headers["x-gateway-route"] == "support"
    assert eventually(lambda: len(records.records) == 1)  # finished: the answer is stored
    assert chat(gw, "support", messages, temperature=0)[0].headers["x-gateway-cache"] == "hit-exact"
    assert fakes["mid"].calls == 1
    assert chat(gw, "auto", messages, temperature=0)[0].headers["x-gateway-cache-key"] == first.headers["x-gateway-cache-key"]


def test_models_lists_routes_and_aliases(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, RULES))
    ids = {m.id for m in gw.client().models.list()}
    assert {"auto", "gpt-4", "support", "chat", "cheap-model"} <= ids


def test_first_strategy_adds_no_work_per_request(start_gateway, fakes):
    """The `first` strategy's order is the route's own tuple: no per-request list is built."""
    gw = start_gateway(routing_config(fakes, {"support": {"targets": ["cheap-model", "mid-model"]}}))
    route = gw.runtime.resolve("support", {"model": "support", "messages": MESSAGES}, {})
    assert route.policy.order(route, {}) is route.targets
    assert gw.runtime.resolve("support", {}, {}) is route  # no copy unless a budget header asks for one
