"""OpenAI's Responses API (`POST /v1/responses`) end to end: the real `openai` SDK (strict about
what it reads) through the gateway to the OpenAI fake's Responses API (the request passed as it
came, only `model` rewritten) and to the Anthropic fake (translated to the chat form and back),
with tools, structured output, server-side state, the cache, errors, fallbacks and /metrics."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import openai
import pytest
from pydantic import BaseModel

from .conftest import eventually
from .fake_anthropic import API_KEY, FakeAnthropic, prompt_tokens
from .fake_upstream import FakeUpstream
from .test_metrics import scrape, settled

UPSTREAM_MODEL = "gpt-4o-mini-2024-07-18"   # the openai target's name upstream
PRICES = {"gpt-4o-mini": (1500.0, 6000.0, 750.0), "claude-sonnet": (3000.0, 15000.0, None)}   # in, out, cached in


@pytest.fixture(scope="module")
def claude_api() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic(name="anthropic").start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _fresh(claude_api: FakeAnthropic) -> None:
    claude_api.reset()


def config(claude_api: FakeAnthropic, upstream: FakeUpstream, **top: Any) -> dict[str, Any]:
    # Prices per 1M tokens high enough that a few dozen tokens make cents: cost is checked to the cent.
    (mini_in, mini_out, mini_cached), (claude_in, claude_out, _) = PRICES["gpt-4o-mini"], PRICES["claude-sonnet"]
    cfg: dict[str, Any] = {
        "providers": {
            "anthropic": {"type": "anthropic", "base_url": claude_api.url, "api_key": API_KEY, "timeout_s": 10},
            "openai": {"base_url": upstream.url, "api_key": "sk-openai", "timeout_s": 10},
        },
        "models": {
            "claude-sonnet": {"provider": "anthropic", "name": "claude-sonnet-4-5", "max_tokens": 1024,
                              "input_per_1m": claude_in, "output_per_1m": claude_out},
            "gpt-4o-mini": {"provider": "openai", "name": UPSTREAM_MODEL, "input_per_1m": mini_in,
                            "output_per_1m": mini_out, "cached_input_per_1m": mini_cached},
        },
        "routes": {"support": {"targets": ["gpt-4o-mini", "claude-sonnet"]}},
        "cache": {"cacheable": "never"},
    }
    cfg.update(top)
    return cfg


@pytest.fixture
def gw(start_gateway, claude_api, upstream):
    return start_gateway(config(claude_api, upstream))


def client(gw) -> openai.OpenAI:
    return gw.client(_strict_response_validation=True)   # every answer and event checked against the SDK's types


BOTH = pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet"])
ASK = "Where is my parcel?"
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}, "strict": True}


def responses_seen(upstream: FakeUpstream) -> list[dict[str, Any]]:
    return [s.body for s in upstream.seen if s.path == "/v1/responses"]


# ---- answers and streams ----------------------------------------------------------------------------

@BOTH
def test_a_plain_answer_native_and_translated(gw, claude_api, upstream, model):
    answer = client(gw).responses.create(model=model, input=ASK, instructions="Be brief.", max_output_tokens=100)
    assert answer.object == "response" and answer.status == "completed" and answer.id.startswith("resp_")
    assert [item.type for item in answer.output] == ["message"]
    assert answer.output_text == "Echo: Where is my parcel?"
    assert answer.usage.input_tokens > 0 and answer.usage.output_tokens > 0
    assert answer.usage.total_tokens == answer.usage.input_tokens + answer.usage.output_tokens
    if model == "gpt-4o-mini":   # as it came, to {base_url}/responses, with the target's upstream name
        [body] = responses_seen(upstream)
        assert body == {"model": UPSTREAM_MODEL, "input": ASK, "instructions": "Be brief.", "max_output_tokens": 100}
        assert upstream.seen[-1].headers["authorization"] == "Bearer sk-openai"
        assert answer.model == UPSTREAM_MODEL and claude_api.calls == 0
    else:   # translated: the chat form, then Anthropic's Messages API
        body = claude_api.seen[-1].body
        assert body["model"] == "claude-sonnet-4-5" and body["max_tokens"] == 100 and body["system"] == "Be brief."
        assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": ASK}]}]
        assert answer.instructions == "Be brief." and answer.max_output_tokens == 100 and upstream.calls == 0


@BOTH
def test_a_streamed_answer_is_the_plain_one(gw, claude_api, upstream, model):
    reply = "Your parcel left the depot and arrives tomorrow before noon."
    claude_api.set(reply=reply, chunk_delay_s=0.002)
    upstream.set(reply=reply, chunk_delay_s=0.002)
    c = client(gw)
    plain = c.responses.create(model=model, input=ASK)
    kinds, deltas, sequence = [], [], []
    for event in c.responses.create(model=model, input=ASK, stream=True):
        kinds.append(event.type)
        sequence.append(event.sequence_number)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type == "response.completed":
            completed = event.response
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert len(deltas) > 3 and sequence == list(range(len(kinds)))
    with c.responses.stream(model=model, input=ASK) as stream:
        streamed = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert "".join(deltas) == streamed == final.output_text == completed.output_text == plain.output_text == reply
    assert final.status == "completed" and final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens


# ---- function tools ---------------------------------------------------------------------------------

@BOTH
@pytest.mark.parametrize("stream", [False, True])
def test_a_function_tool_round_trip(gw, claude_api, upstream, model, stream):
    c = client(gw)
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        with c.responses.stream(model=model, input=ask, tools=[WEATHER]) as events:
            first = events.get_final_response()
    else:
        first = c.responses.create(model=model, input=ask, tools=[WEATHER])
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and first.status == "completed"
    assert json.loads(call.arguments) == {"city": "example"} and call.call_id
    final = c.responses.create(model=model, tools=[WEATHER], input=[
        *ask, call, {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}])
    assert [item.type for item in final.output] == ["message"] and final.status == "completed"
    if model == "gpt-4o-mini":   # the items went as they came: the fake checked the output answers the call
        assert final.output_text == "Echo: What is the weather in Paris?"
        sent = responses_seen(upstream)[-1]["input"]
        assert sent[1]["type"] == "function_call" and sent[1]["call_id"] == call.call_id
        assert sent[2] == {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}
        assert responses_seen(upstream)[0]["tools"] == [WEATHER]
    else:   # a tool_use, then its tool_result, as Anthropic wants them
        assert final.output_text == "Echo: the tool said sunny, 21 C"
        messages = claude_api.seen[-1].body["messages"]
        assert messages[1]["role"] == "assistant" and messages[1]["content"][0]["type"] == "tool_use"
        assert messages[1]["content"][0]["id"] == call.call_id and messages[1]["content"][0]["name"] == "get_weather"
        assert messages[2]["content"][0]["type"] == "tool_result"
        assert messages[2]["content"][0]["tool_use_id"] == call.call_id
        assert claude_api.seen[0].body["tools"][0]["name"] == "get_weather"


def test_an_unanswered_call_id_is_the_providers_400(gw, upstream):
    """The OpenAI fake is as strict as OpenAI: a function_call_output for no call is refused, and
    the refusal reaches the client as it came."""
    with pytest.raises(openai.BadRequestError) as caught:
        client(gw).responses.create(model="gpt-4o-mini", input=[
            {"role": "user", "content": ASK}, {"type": "function_call_output", "call_id": "call_nope", "output": "x"}])
    assert "No tool call found for function call output with call_id call_nope" in caught.value.message
    assert caught.value.param == "input" and upstream.calls == 1


# ---- structured output ------------------------------------------------------------------------------

class Parcel(BaseModel):
    status: str
    days_left: int


@BOTH
def test_text_format_json_schema(gw, claude_api, upstream, model):
    answer = client(gw).responses.parse(model=model, input="Parcel 42: what status?", text_format=Parcel)
    assert answer.output_parsed == Parcel(status="example", days_left=1)
    assert json.loads(answer.output_text) == {"status": "example", "days_left": 1}
    if model == "gpt-4o-mini":
        spec = responses_seen(upstream)[-1]["text"]["format"]
        assert spec["type"] == "json_schema" and spec["name"] == "Parcel" and spec["strict"] is True
        assert spec["schema"]["required"] == ["status", "days_left"]
    else:   # Anthropic answers JSON through a forced tool
        body = claude_api.seen[-1].body
        assert body["tools"][0]["input_schema"]["required"] == ["status", "days_left"]
        assert body["tool_choice"]["type"] == "tool"


# ---- what only OpenAI can answer ---------------------------------------------------------------------

def test_server_state_and_hosted_tools_only_where_openai_answers(gw, claude_api, upstream):
    c = client(gw)
    with pytest.raises(openai.BadRequestError) as caught:
        c.responses.create(model="claude-sonnet", input="And tomorrow?", previous_response_id="resp_123")
    assert caught.value.param == "previous_response_id" and "previous_response_id" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        c.responses.create(model="claude-sonnet", input=ASK, tools=[{"type": "web_search"}])
    assert caught.value.param == "tools[0]" and "web_search" in caught.value.message
    assert claude_api.calls == 0

    first = c.responses.create(model="gpt-4o-mini", input=ASK)
    again = c.responses.create(model="gpt-4o-mini", input="And tomorrow?", previous_response_id=first.id)
    assert again.previous_response_id == first.id and again.output_text == "Echo: And tomorrow?"
    assert responses_seen(upstream)[-1]["previous_response_id"] == first.id
    searched = c.responses.create(model="gpt-4o-mini", input=ASK, tools=[{"type": "web_search"}])
    assert [item.type for item in searched.output] == ["web_search_call", "message"]
    with c.responses.stream(model="gpt-4o-mini", input=ASK, tools=[{"type": "web_search"}]) as stream:
        kinds = [e.type for e in stream]
        assert stream.get_final_response().output_text == "Echo: Where is my parcel?"
    assert "response.web_search_call.searching" in kinds


# ---- the cache ---------------------------------------------------------------------------------------

def cached_config(claude_api, upstream):
    return config(claude_api, upstream, cache={"cacheable": "deterministic"})


@BOTH
def test_a_cacheable_request_is_a_hit_as_json_and_as_a_stream(start_gateway, claude_api, upstream, model):
    gw = start_gateway(cached_config(claude_api, upstream))
    c = client(gw)
    ask = dict(model=model, input=ASK, temperature=0, max_output_tokens=100)
    first = c.responses.with_raw_response.create(**ask)
    assert first.headers["x-gateway-cache"] == "miss"
    again = c.responses.with_raw_response.create(**ask)
    assert again.headers["x-gateway-cache"] == "hit-exact"
    assert again.headers["x-gateway-cost-usd"] == "0.00000000"
    answer = again.parse()
    assert answer.output_text == first.parse().output_text == "Echo: Where is my parcel?"
    assert answer.status == "completed" and answer.usage.output_tokens == first.parse().usage.output_tokens
    streamed = c.responses.with_raw_response.create(**ask, stream=True)
    assert streamed.headers["x-gateway-cache"] == "hit-exact"
    assert "".join(e.delta for e in streamed.parse() if e.type == "response.output_text.delta") == answer.output_text
    with c.responses.stream(**ask) as stream:
        assert stream.get_final_response().output_text == answer.output_text
    assert upstream.calls + claude_api.calls == 1
    # Chat completions have a key space of their own: the same question there is a miss.
    chat = gw.client().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": ASK}], temperature=0, max_tokens=100)
    assert chat.headers["x-gateway-cache"] == "miss"
    # Not deterministic: not cached.
    other = c.responses.with_raw_response.create(model=model, input=ASK, max_output_tokens=100)
    assert other.headers["x-gateway-cache"] == "bypass"


@BOTH
def test_a_streamed_answer_is_cached_and_served_as_json(start_gateway, claude_api, upstream, model):
    gw = start_gateway(cached_config(claude_api, upstream))
    c = client(gw)
    upstream.set(reply="It is on its way.")
    claude_api.set(reply="It is on its way.")
    with c.responses.stream(model=model, input=ASK, temperature=0) as stream:
        text = stream.get_final_response().output_text
    assert eventually(lambda: scrape(gw).value("gateway_cache_entries", layer="exact") == 1)
    again = c.responses.with_raw_response.create(model=model, input=ASK, temperature=0)
    assert again.headers["x-gateway-cache"] == "hit-exact" and again.parse().output_text == text == "It is on its way."
    assert upstream.calls + claude_api.calls == 1


def test_state_kept_upstream_is_never_cached(start_gateway, claude_api, upstream):
    gw = start_gateway(config(claude_api, upstream, cache={"cacheable": "always"}))
    c = client(gw)
    first = c.responses.create(model="gpt-4o-mini", input=ASK)
    for _ in range(2):
        raw = c.responses.with_raw_response.create(model="gpt-4o-mini", input="And tomorrow?", temperature=0,
                                                   previous_response_id=first.id)
        assert raw.headers["x-gateway-cache"] == "bypass" and "x-gateway-cache-key" not in raw.headers
        assert raw.parse().previous_response_id == first.id
    for _ in range(2):   # a hosted tool's answer depends on the web, not on the request alone
        raw = c.responses.with_raw_response.create(model="gpt-4o-mini", input=ASK, temperature=0,
                                                   tools=[{"type": "web_search"}])
        assert raw.headers["x-gateway-cache"] == "bypass"
    for _ in range(2):   # kept by OpenAI on request
        raw = c.responses.with_raw_response.create(model="gpt-4o-mini", input=ASK, temperature=0, store=True)
        assert raw.headers["x-gateway-cache"] == "bypass"
    assert upstream.calls_to("/v1/responses") == 7
    assert eventually(lambda: scrape(gw).value("gateway_cache_entries", layer="exact") == 1)   # the first one


@BOTH
def test_identical_requests_in_flight_make_one_upstream_call(start_gateway, claude_api, upstream, model):
    gw = start_gateway(cached_config(claude_api, upstream))
    upstream.set(latency_s=0.3)
    claude_api.set(chunk_delay_s=0.05)   # the Anthropic fake has no latency knob: a slow stream instead
    stream = model == "claude-sonnet"

    def ask(_: int) -> tuple[str, str]:
        c = client(gw)
        if stream:
            with c.responses.with_streaming_response.create(model=model, input=ASK, temperature=0, stream=True) as raw:
                text = "".join(e.delta for e in raw.parse() if e.type == "response.output_text.delta")
                return raw.headers["x-gateway-cache"], text
        raw = c.responses.with_raw_response.create(model=model, input=ASK, temperature=0)
        return raw.headers["x-gateway-cache"], raw.parse().output_text

    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(ask, range(4)))
    assert sorted(kind for kind, _ in found) == ["hit-exact"] * 3 + ["miss"]
    assert {text for _, text in found} == {"Echo: Where is my parcel?"}
    assert upstream.calls + claude_api.calls == 1


class FailedResponses(FakeUpstream):
    """OpenAI's Responses API answering 200 with a response that failed part way (status "failed",
    its error, the output written until then)."""

    def _response(self, body: dict[str, Any], knobs: Any, context: list[dict[str, Any]]) -> dict[str, Any]:
        out = super()._response(body, knobs, context)
        for item in out["output"]:
            item["status"] = "incomplete"
        return {**out, "status": "failed", "completed_at": None,
                "error": {"code": "server_error", "message": "The model failed to answer."}}


def test_a_failed_response_passes_through_and_is_never_cached(start_gateway, claude_api):
    failing = FailedResponses(name="failing").start()
    try:
        cfg = config(claude_api, failing, cache={"cacheable": "always"})
        gw = start_gateway(cfg)
        for _ in range(2):
            raw = client(gw).responses.with_raw_response.create(model="gpt-4o-mini", input=ASK)
            assert raw.headers["x-gateway-cache"] == "miss"
            answer = raw.parse()
            assert answer.status == "failed" and answer.error.code == "server_error"
            assert answer.output_text == "Echo: Where is my parcel?"   # what it wrote before it failed
        assert failing.calls == 2
    finally:
        failing.stop()


# ---- errors and fallbacks ----------------------------------------------------------------------------

def test_a_429_from_openai_is_the_sdks_rate_limit_error(start_gateway, claude_api, upstream):
    gw = start_gateway(config(claude_api, upstream, routes={}))
    upstream.set(error_status=429, retry_after="7")
    with pytest.raises(openai.RateLimitError) as caught:
        client(gw).responses.create(model="gpt-4o-mini", input=ASK)
    assert caught.value.status_code == 429 and caught.value.response.headers["retry-after"] == "7"
    assert caught.value.body["message"] == "fake upstream error 429"
    with pytest.raises(openai.RateLimitError):
        client(gw).responses.create(model="gpt-4o-mini", input=ASK, stream=True)
    claude_api.set(error_type="rate_limit_error")
    with pytest.raises(openai.RateLimitError) as caught:   # Anthropic's error, in OpenAI's shape
        client(gw).responses.create(model="claude-sonnet", input=ASK)
    assert caught.value.body["type"] == "rate_limit_error"


def test_the_providers_own_refusal_passes_untouched(gw, upstream):
    with pytest.raises(openai.BadRequestError) as caught:
        client(gw).responses.create(model="gpt-4o-mini", input=ASK, max_output_tokens=10)
    assert caught.value.code == "integer_below_min_value" and caught.value.param == "max_output_tokens"


@pytest.mark.parametrize("stream", [False, True])
def test_a_route_falls_back_from_openai_to_anthropic(gw, claude_api, upstream, stream):
    upstream.set(error_status=429)
    c = client(gw)
    if stream:
        with c.responses.with_streaming_response.create(model="support", input=ASK, stream=True) as raw:
            assert raw.headers["x-gateway-target"] == "claude-sonnet"
            text = "".join(e.delta for e in raw.parse() if e.type == "response.output_text.delta")
    else:
        raw = c.responses.with_raw_response.create(model="support", input=ASK)
        assert raw.headers["x-gateway-target"] == "claude-sonnet"
        text = raw.parse().output_text
    assert text == "Echo: Where is my parcel?" and upstream.calls == 1 and claude_api.calls == 1


def test_a_fallback_that_cannot_take_the_request_keeps_the_error_that_caused_it(gw, claude_api, upstream):
    first = client(gw).responses.create(model="gpt-4o-mini", input=ASK)
    upstream.set(error_status=429, retry_after="7")
    with pytest.raises(openai.RateLimitError) as caught:   # today: BadRequestError, previous_response_id
        client(gw).responses.create(model="support", input="And tomorrow?", previous_response_id=first.id)
    assert caught.value.response.headers["retry-after"] == "7" and claude_api.calls == 0


@BOTH
def test_a_stream_cut_short_ends_in_the_sdks_error(gw, claude_api, upstream, model):
    upstream.set(reply="one two three four five", broken_after=2)
    claude_api.set(reply="one two three four five", stream_stop_after=2)
    with pytest.raises(openai.APIError):
        with client(gw).responses.stream(model=model, input=ASK) as stream:
            for _ in stream:
                pass
    r = gw.http().post("/v1/responses", json={"model": model, "input": ASK, "stream": True})
    assert "event: response.completed" not in r.text and "event: error" in r.text


@pytest.mark.parametrize("field, param", [({"reasoning": {"effort": "low"}}, "reasoning.effort"),
                                          ({"text": {"verbosity": "low"}}, "text.verbosity"),
                                          ({"max_tool_calls": 3}, "max_tool_calls")])
def test_a_field_anthropic_cannot_take_is_named_as_the_client_sent_it(gw, claude_api, field, param):
    """The refusal names the Responses field, not the chat form's field it was read into."""
    with pytest.raises(openai.BadRequestError) as caught:
        client(gw).responses.create(model="claude-sonnet", input=ASK, **field)
    assert caught.value.param == param and f"'{param}'" in caught.value.message
    assert caught.value.code == "unsupported_parameter" and claude_api.calls == 0


@BOTH
def test_the_error_event_of_a_broken_stream_is_numbered_in_sequence(gw, claude_api, upstream, model):
    upstream.set(reply="one two three four five", broken_after=2)
    claude_api.set(reply="one two three four five", stream_stop_after=2)
    r = gw.http().post("/v1/responses", json={"model": model, "input": ASK, "stream": True})
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "error" and len(events) > 3
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_the_gateways_own_errors_are_openai_shaped(gw, upstream):
    with pytest.raises(openai.NotFoundError):
        client(gw).responses.create(model="no-such-model", input=ASK)
    r = gw.http().post("/v1/responses", json={"model": "gpt-4o-mini"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    r = gw.http().post("/v1/responses", json={"model": "claude-sonnet", "input": ASK, "top_logprobs": 3})
    assert r.status_code == 400 and "top_logprobs" in r.json()["error"]["message"]
    assert upstream.calls == 0


# ---- usage and cost in /metrics ----------------------------------------------------------------------

def cost(model: str, prompt: int, completion: int, cached: int = 0) -> float:
    inp, out, cached_price = PRICES[model]
    read = inp if cached_price is None else cached_price
    return ((prompt - cached) * inp + cached * read + completion * out) / 1e6


def test_usage_and_cost_in_metrics_after_a_mix(start_gateway, claude_api, upstream):
    gw = start_gateway(cached_config(claude_api, upstream))
    c = client(gw)
    upstream.set(cached_tokens=4)
    answers: list[tuple[str, Any]] = []
    answers.append(("gpt-4o-mini", c.responses.create(model="gpt-4o-mini", input=ASK, instructions="Be brief.")))
    with c.responses.stream(model="gpt-4o-mini", input="Tell me a long story about parcels.") as stream:
        answers.append(("gpt-4o-mini", stream.get_final_response()))
    answers.append(("gpt-4o-mini", c.responses.create(model="gpt-4o-mini", input="Weather in Oslo?", tools=[WEATHER])))
    answers.append(("claude-sonnet", c.responses.create(model="claude-sonnet", input=ASK, temperature=0)))
    with c.responses.stream(model="claude-sonnet", input="A longer question, streamed this time.") as stream:
        answers.append(("claude-sonnet", stream.get_final_response()))
    hit = c.responses.with_raw_response.create(model="claude-sonnet", input=ASK, temperature=0)   # saved, not spent
    assert hit.headers["x-gateway-cache"] == "hit-exact"
    c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": ASK}])   # another endpoint

    m = settled(gw, 7)
    assert m.value("gateway_requests_total", endpoint="responses") == 6
    assert m.value("gateway_requests_total", endpoint="chat") == 1
    assert m.value("gateway_requests_total", endpoint="responses", cache="hit-exact") == 1
    assert upstream.seen[-1].path == "/v1/chat/completions"
    chat_prompt, chat_completion = len(ASK.split()) + 3, len(f"Echo: {ASK}".split())   # the fake's own count
    # What Anthropic counted (its fake's count) is what the translated answers say they used.
    claude = [a for name, a in answers if name == "claude-sonnet"]
    assert [a.usage.input_tokens for a in claude] == [prompt_tokens(s.body) for s in claude_api.seen]
    assert [a.usage.output_tokens for a in claude] == [len(a.output_text.split()) for a in claude]
    for model in ("gpt-4o-mini", "claude-sonnet"):
        mine = [a.usage for name, a in answers if name == model]
        prompt = sum(u.input_tokens for u in mine)
        completion = sum(u.output_tokens for u in mine)
        cached = sum(u.input_tokens_details.cached_tokens for u in mine)
        spent = sum(cost(model, u.input_tokens, u.output_tokens, u.input_tokens_details.cached_tokens) for u in mine)
        if model == "gpt-4o-mini":
            assert cached == 12   # the fake's knob: 4 read from OpenAI's prompt cache each time
            prompt, completion = prompt + chat_prompt, completion + chat_completion
            spent += cost(model, chat_prompt, chat_completion)
        assert m.value("gateway_tokens_total", model=model, kind="prompt") == prompt
        assert m.value("gateway_tokens_total", model=model, kind="completion") == completion
        assert m.value("gateway_tokens_total", model=model, kind="cached") == cached
        assert m.value("gateway_cost_usd_total", model=model) == pytest.approx(spent, abs=1e-9)
        assert round(m.value("gateway_cost_usd_total", model=model), 2) == round(spent, 2) > 0
    saved = hit.parse().usage
    assert m.value("gateway_cost_saved_usd_total", model="claude-sonnet") == pytest.approx(
        cost("claude-sonnet", saved.input_tokens, saved.output_tokens), abs=1e-9)
