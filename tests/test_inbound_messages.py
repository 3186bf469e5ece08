"""Anthropic's Messages API inbound (`POST /v1/messages`): the real `anthropic` SDK through the
gateway to the strict Anthropic fake (the request passed natively) and to the OpenAI-compatible
fake (translated to chat completions and back), with routing, the cache, metrics and errors."""

from __future__ import annotations

from typing import Any, Iterator

import anthropic
import pytest

from .conftest import eventually
from .fake_anthropic import API_KEY, FakeAnthropic
from .fake_upstream import FakeUpstream
from .test_metrics import scrape, settled


@pytest.fixture(scope="module")
def claude_api() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic(name="anthropic").start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _fresh(claude_api: FakeAnthropic) -> None:
    claude_api.reset()


def config(claude_api: FakeAnthropic, upstream: FakeUpstream, **top: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "providers": {
            "anthropic": {"type": "anthropic", "base_url": claude_api.url, "api_key": API_KEY, "timeout_s": 10},
            "openai": {"base_url": upstream.url, "api_key": "sk-openai", "timeout_s": 10},
        },
        "models": {
            "claude-sonnet": {"provider": "anthropic", "name": "claude-sonnet-4-5", "max_tokens": 1024,
                              "input_per_1m": 3.0, "output_per_1m": 15.0},
            "gpt-4o-mini": {"provider": "openai", "input_per_1m": 0.15, "output_per_1m": 0.60},
        },
        "routes": {"support": {"targets": ["gpt-4o-mini", "claude-sonnet"]}},
        "cache": {"cacheable": "never"},
    }
    cfg.update(top)
    return cfg


@pytest.fixture
def gw(start_gateway, claude_api, upstream):
    return start_gateway(config(claude_api, upstream))


def client(gw, key: str = "sk-client") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)


ASK = [{"role": "user", "content": "Where is my parcel?"}]


@pytest.mark.parametrize("model", ["claude-sonnet", "gpt-4o-mini"])
def test_a_plain_answer_native_and_translated(gw, claude_api, upstream, model):
    answer = client(gw).messages.create(model=model, max_tokens=100, system="Be brief.", messages=ASK)
    assert answer.type == "message" and answer.role == "assistant"
    assert [b.type for b in answer.content] == ["text"] and answer.content[0].text == "Echo: Where is my parcel?"
    assert answer.stop_reason == "end_turn" and answer.usage.output_tokens > 0 and answer.usage.input_tokens > 0
    if model == "claude-sonnet":   # as it came: system, max_tokens, the model's upstream name
        body = claude_api.seen[-1].body
        assert body == {"model": "claude-sonnet-4-5", "max_tokens": 100, "system": "Be brief.", "messages": ASK}
    else:   # translated to chat completions
        body = upstream.seen[-1].body
        assert body["messages"] == [{"role": "system", "content": "Be brief."}, ASK[0]]
        assert body["max_tokens"] == 100 and body["model"] == "gpt-4o-mini"


@pytest.mark.parametrize("model", ["claude-sonnet", "gpt-4o-mini"])
def test_a_streamed_answer_is_the_plain_one(gw, claude_api, upstream, model):
    claude_api.set(reply="Your parcel arrives tomorrow before noon.", chunk_delay_s=0.002)
    upstream.set(reply="Your parcel arrives tomorrow before noon.", chunk_delay_s=0.002)
    plain = client(gw).messages.create(model=model, max_tokens=100, messages=ASK)
    with client(gw).messages.stream(model=model, max_tokens=100, messages=ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == plain.content[0].text == "Your parcel arrives tomorrow before noon."
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == plain.usage.output_tokens


def test_tools_round_trip_translated(gw, upstream):
    tools = [{"name": "order_status", "description": "Look up an order.",
              "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}},
                               "required": ["order_id"]}}]
    c = client(gw)
    first = c.messages.create(model="gpt-4o-mini", max_tokens=100, tools=tools, messages=ASK)
    assert first.stop_reason == "tool_use"
    [use] = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "order_status" and use.input == {"order_id": "example"}
    sent = upstream.seen[-1].body
    assert sent["tools"] == [{"type": "function", "function": {"name": "order_status", "parameters":
                              tools[0]["input_schema"], "description": "Look up an order."}}]
    final = c.messages.create(model="gpt-4o-mini", max_tokens=100, tools=tools, messages=[
        *ASK, {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "shipped"}]}])
    assert final.stop_reason == "end_turn" and final.content[0].type == "text"
    chat = upstream.seen[-1].body["messages"]
    assert chat[1]["tool_calls"][0]["id"] == use.id and chat[1]["tool_calls"][0]["function"]["name"] == "order_status"
    assert chat[2] == {"role": "tool", "tool_call_id": use.id, "content": "shipped"}


def test_a_streamed_tool_call_translated(gw, upstream):
    tools = [{"name": "order_status", "input_schema": {"type": "object", "properties": {
        "order_id": {"type": "string"}}, "required": ["order_id"]}}]
    with client(gw).messages.stream(model="gpt-4o-mini", max_tokens=100, tools=tools, messages=ASK) as stream:
        final = stream.get_final_message()
    [use] = [b for b in final.content if b.type == "tool_use"]
    assert use.input == {"order_id": "example"} and final.stop_reason == "tool_use"


def test_native_tools_pass_untouched(gw, claude_api):
    tools = [{"name": "order_status", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}]
    answer = client(gw).messages.create(model="claude-sonnet", max_tokens=100, tools=tools, messages=ASK,
                                        tool_choice={"type": "any"})
    assert answer.stop_reason == "tool_use" and answer.content[0].type == "tool_use"
    assert claude_api.seen[-1].body["tools"] == tools


def test_a_route_falls_back_from_openai_to_claude_for_a_messages_client(gw, claude_api, upstream):
    upstream.set(error_status=429)
    raw = client(gw).messages.with_raw_response.create(model="support", max_tokens=100, messages=ASK)
    assert raw.headers["x-gateway-target"] == "claude-sonnet"
    assert raw.parse().content[0].text == "Echo: Where is my parcel?" and claude_api.calls == 1


@pytest.mark.parametrize("model, exception, status", [
    ("claude-sonnet", anthropic.RateLimitError, 429),      # Anthropic's own error, as it came
    ("gpt-4o-mini", anthropic.RateLimitError, 429),        # OpenAI's, in Anthropic's shape
])
def test_errors_are_the_anthropic_sdks_exceptions(start_gateway, claude_api, upstream, model, exception, status):
    gw = start_gateway(config(claude_api, upstream, routes={}))
    claude_api.set(error_type="rate_limit_error")
    upstream.set(error_status=429)
    with pytest.raises(exception) as caught:
        client(gw).messages.create(model=model, max_tokens=100, messages=ASK)
    assert caught.value.status_code == status
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "rate_limit_error"


def test_the_gateways_own_errors_are_in_anthropics_shape(gw):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client(gw).messages.create(model="no-such-model", max_tokens=10, messages=ASK)
    assert caught.value.body["error"]["type"] == "not_found_error"
    r = gw.http().post("/v1/messages", json={"model": "claude-sonnet", "messages": ASK})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in r.json()["error"]["message"]


def test_anthropic_only_fields_to_another_provider_are_a_clear_400(gw, upstream):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(gw).messages.create(model="gpt-4o-mini", max_tokens=10, messages=ASK, extra_body={"top_k": 5})
    assert "top_k" in caught.value.message and upstream.calls == 0


def test_gateway_keys_in_x_api_key(start_gateway, claude_api, upstream):
    gw = start_gateway(config(claude_api, upstream, auth={"keys": [{"name": "team", "key": "gw-team-key"}]}))
    assert client(gw, "gw-team-key").messages.create(model="claude-sonnet", max_tokens=10, messages=ASK).content
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client(gw, "wrong").messages.create(model="claude-sonnet", max_tokens=10, messages=ASK)
    assert caught.value.body["error"]["type"] == "authentication_error"
    assert claude_api.seen[-1].headers["x-api-key"] == API_KEY   # the provider's key, not the client's


def test_models_list_in_anthropics_shape(gw):
    names = [m.id for m in client(gw).models.list()]
    assert "claude-sonnet" in names and "support" in names
    assert client(gw).models.retrieve("claude-sonnet").display_name == "claude-sonnet"


@pytest.mark.parametrize("model", ["claude-sonnet", "gpt-4o-mini"])
def test_a_cached_answer_is_served_to_the_messages_client_as_json_and_as_a_stream(start_gateway, claude_api,
                                                                                   upstream, model):
    gw = start_gateway(config(claude_api, upstream, cache={"cacheable": "always"}))
    c = client(gw)
    first = c.messages.with_raw_response.create(model=model, max_tokens=100, messages=ASK)
    assert first.headers["x-gateway-cache"] == "miss"
    again = c.messages.with_raw_response.create(model=model, max_tokens=100, messages=ASK)
    assert again.headers["x-gateway-cache"] == "hit-exact"
    assert again.parse().content[0].text == first.parse().content[0].text
    with c.messages.stream(model=model, max_tokens=100, messages=ASK) as stream:
        assert "".join(stream.text_stream) == first.parse().content[0].text
    assert claude_api.calls + upstream.calls == 1
    chat = gw.client().chat.completions.with_raw_response.create(model=model, messages=ASK, max_tokens=100)
    assert chat.headers["x-gateway-cache"] == "miss"   # chat completions have a key space of their own


def test_a_streamed_messages_answer_is_cached_and_counted(start_gateway, claude_api, upstream):
    gw = start_gateway(config(claude_api, upstream, cache={"cacheable": "always"}))
    with client(gw).messages.stream(model="claude-sonnet", max_tokens=100, messages=ASK) as stream:
        text = "".join(stream.text_stream)
    assert eventually(lambda: scrape(gw).value("gateway_cache_entries", layer="exact") == 1)
    again = client(gw).messages.create(model="claude-sonnet", max_tokens=100, messages=ASK)
    assert again.content[0].text == text and claude_api.calls == 1
    m = settled(gw, 2)
    assert m.value("gateway_requests_total", endpoint="messages") == 2
    assert m.value("gateway_tokens_total", model="claude-sonnet", kind="completion") == 5
    assert m.value("gateway_cost_usd_total", model="claude-sonnet") > 0


def test_a_stream_cut_short_ends_with_an_error_event(gw, claude_api, upstream):
    upstream.set(reply="one two three four", broken_after=2)
    with pytest.raises(anthropic.APIError):
        with client(gw).messages.stream(model="gpt-4o-mini", max_tokens=100, messages=ASK) as stream:
            for _ in stream.text_stream:
                pass
    claude_api.set(reply="one two three four", stream_stop_after=2)
    r = gw.http().post("/v1/messages", json={"model": "claude-sonnet", "max_tokens": 10, "messages": ASK,
                                             "stream": True})
    assert "event: message_stop" not in r.text and "event: error" in r.text


def test_count_tokens_from_anthropic_or_estimated(gw, claude_api, upstream):
    c = client(gw)
    counted = c.messages.count_tokens(model="claude-sonnet", system="Be brief.", messages=ASK)
    assert counted.input_tokens > 0 and claude_api.seen[-1].path == "/v1/messages/count_tokens"
    assert claude_api.seen[-1].body["model"] == "claude-sonnet-4-5"
    raw = c.messages.with_raw_response.count_tokens(model="gpt-4o-mini", messages=ASK)
    assert raw.headers["x-gateway-tokens-estimated"] == "true" and raw.parse().input_tokens == 5
    assert upstream.calls == 0
    with pytest.raises(anthropic.NotFoundError):
        c.messages.count_tokens(model="no-such-model", messages=ASK)
