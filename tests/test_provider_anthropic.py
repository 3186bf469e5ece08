"""The `anthropic` provider type: OpenAI clients (the openai SDK, LangChain) through the gateway to a
strict fake of Anthropic's Messages API; answers, streams, tools, images, JSON, usage with the
prompt cache, errors; and Claude next to an OpenAI-compatible provider on one route."""

from __future__ import annotations

import base64
import threading
from typing import Any, Iterator

import httpx
import openai
import orjson
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from .conftest import eventually
from .fake_anthropic import API_KEY, FakeAnthropic
from .fake_upstream import FakeUpstream
from .test_metrics import scrape, settled

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
CLAUDE = {"provider": "anthropic", "name": "claude-sonnet-4-5", "max_tokens": 1024, "input_per_1m": 3.0,
          "output_per_1m": 15.0, "cache_read_per_1m": 0.30, "cache_write_per_1m": 3.75}


@pytest.fixture(scope="module")
def claude_api() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic(name="anthropic").start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _fresh(claude_api: FakeAnthropic) -> None:
    claude_api.reset()


def config(claude_api: FakeAnthropic, upstream: FakeUpstream, **routes: Any) -> dict[str, Any]:
    return {
        "providers": {
            "anthropic": {"type": "anthropic", "base_url": claude_api.url, "api_key": API_KEY, "timeout_s": 10},
            "openai": {"base_url": upstream.url, "api_key": "sk-openai", "timeout_s": 10},
        },
        "models": {"claude-sonnet": CLAUDE,
                   "gpt-4o-mini": {"provider": "openai", "input_per_1m": 0.15, "output_per_1m": 0.60}},
        "routes": routes or {"support": {"targets": ["claude-sonnet"]}},
        "cache": {"cacheable": "never"},
    }


@pytest.fixture
def gw(start_gateway, claude_api, upstream):
    return start_gateway(config(claude_api, upstream))


def sent(fake: FakeAnthropic, i: int = -1) -> dict[str, Any]:
    return fake.seen[i].body


# ---- answers ----------------------------------------------------------------------------------------

def test_a_plain_answer_in_openai_shape(gw, claude_api):
    client = gw.client()
    answer = client.chat.completions.create(model="claude-sonnet", messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": "Where is my parcel?"}], user="customer-7", stop="never-said")
    assert answer.object == "chat.completion" and answer.model == "claude-sonnet-4-5"
    assert answer.choices[0].message.content == "Echo: Where is my parcel?"
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.role == "assistant"
    assert answer.usage.completion_tokens == 5 and answer.usage.prompt_tokens > 0
    body, headers = sent(claude_api), claude_api.seen[-1].headers
    assert body["system"] == "You are terse.\n\nAnswer in English."
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Where is my parcel?"}]}]
    assert body["max_tokens"] == 1024 and body["model"] == "claude-sonnet-4-5"   # the model's max_tokens
    assert body["metadata"] == {"user_id": "customer-7"} and body["stop_sequences"] == ["never-said"]
    assert headers["x-api-key"] == API_KEY and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers


def test_the_clients_token_limit_and_sampling_go_through(gw, claude_api):
    gw.client().chat.completions.create(model="claude-sonnet", messages=[{"role": "user", "content": "hi"}],
                                        max_completion_tokens=77, temperature=0.2, top_p=0.9)
    body = sent(claude_api)
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (77, 0.2, 0.9)


@pytest.mark.parametrize("stop_reason, finish", [("max_tokens", "length"), ("stop_sequence", "stop"),
                                                 ("refusal", "content_filter"), ("end_turn", "stop")])
def test_stop_reasons_become_finish_reasons(gw, claude_api, stop_reason, finish):
    claude_api.set(stop_reason=stop_reason)
    answer = gw.client().chat.completions.create(model="claude-sonnet", messages=[{"role": "user", "content": "x"}])
    assert answer.choices[0].finish_reason == finish
    stream = gw.client().chat.completions.create(model="claude-sonnet", messages=[{"role": "user", "content": "x"}],
                                                 stream=True)
    assert [c.choices[0].finish_reason for c in stream if c.choices][-1] == finish


def test_a_streamed_answer_is_the_plain_one_in_chunks(gw, claude_api):
    claude_api.set(reply="Your parcel left the depot this morning and arrives tomorrow.", chunk_delay_s=0.002)
    client = gw.client()
    messages = [{"role": "user", "content": "Where is my parcel?"}]
    plain = client.chat.completions.create(model="claude-sonnet", messages=messages)
    chunks = list(client.chat.completions.create(model="claude-sonnet", messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 5   # as it came, not at once
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert sent(claude_api)["stream"] is True
    without = list(client.chat.completions.create(model="claude-sonnet", messages=messages, stream=True))
    assert all(c.usage is None for c in without)   # the usage chunk only when asked for


def test_langchain_streams_and_invokes_the_same_text(gw, claude_api):
    llm = ChatOpenAI(model="claude-sonnet", base_url=gw.base_url, api_key="sk-client", max_retries=0)
    whole = llm.invoke("How do I reset my password?")
    pieces = "".join(chunk.content for chunk in llm.stream("How do I reset my password?"))
    assert whole.content == pieces == "Echo: How do I reset my password?"
    assert whole.usage_metadata["output_tokens"] == 7   # the fake counts words


# ---- tools ------------------------------------------------------------------------------------------

@tool
def order_status(order_id: str) -> str:
    """Look up the status of an order."""
    return f"order {order_id} shipped"


def test_a_tool_call_round_trip_with_langchain(gw, claude_api):
    llm = ChatOpenAI(model="claude-sonnet", base_url=gw.base_url, api_key="sk-client", max_retries=0)
    with_tools = llm.bind_tools([order_status])
    question = HumanMessage("Where is order 42?")
    first = with_tools.invoke([question])
    [call] = first.tool_calls
    assert call["name"] == "order_status" and call["args"] == {"order_id": "example"}
    assert first.response_metadata["finish_reason"] == "tool_calls"
    result = ToolMessage(order_status.invoke(call["args"]), tool_call_id=call["id"])
    final = with_tools.invoke([question, first, result])
    assert final.content == "Echo: the tool said order example shipped" and not final.tool_calls
    body = sent(claude_api)
    assert body["tools"][0]["name"] == "order_status"
    assert body["tools"][0]["input_schema"]["properties"] == {"order_id": {"type": "string"}}
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": call["id"], "name": "order_status", "input": {"order_id": "example"}}]}
    assert body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call["id"], "content": "order example shipped"}]}


def test_parallel_tool_calls_stream_with_their_indexes(gw, claude_api):
    claude_api.set(tool_uses=2)
    tools = [{"type": "function", "function": {"name": "order_status", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]
    messages = [{"role": "user", "content": "orders 1 and 2?"}]
    client = gw.client()
    plain = client.chat.completions.create(model="claude-sonnet", messages=messages, tools=tools)
    assert [c.function.arguments for c in plain.choices[0].message.tool_calls] == ['{"order_id":"example"}'] * 2
    chunks = list(client.chat.completions.create(model="claude-sonnet", messages=messages, tools=tools,
                                                 stream=True))
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            into = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            into["id"] += delta.id or ""
            into["name"] += (delta.function.name or "") if delta.function else ""
            into["arguments"] += (delta.function.arguments or "") if delta.function else ""
    assert sorted(calls) == [0, 1]
    assert all(orjson.loads(c["arguments"]) == {"order_id": "example"} and c["name"] == "order_status"
               and c["id"].startswith("toolu_") for c in calls.values())
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


@pytest.mark.parametrize("choice, expected", [
    ("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"}),
    ({"type": "function", "function": {"name": "order_status"}}, {"type": "tool", "name": "order_status"}),
])
def test_tool_choice_is_mapped(gw, claude_api, choice, expected):
    tools = [{"type": "function", "function": {"name": "order_status", "parameters": {"type": "object"}}}]
    gw.client().chat.completions.create(model="claude-sonnet", messages=[{"role": "user", "content": "x"}],
                                        tools=tools, tool_choice=choice)
    assert sent(claude_api)["tool_choice"] == expected


def test_parallel_tool_calls_false_disables_them(gw, claude_api):
    claude_api.set(tool_uses=3)
    tools = [{"type": "function", "function": {"name": "order_status", "parameters": {"type": "object"}}}]
    answer = gw.client().chat.completions.create(model="claude-sonnet", messages=[{"role": "user", "content": "x"}],
                                                 tools=tools, parallel_tool_calls=False)
    assert sent(claude_api)["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert len(answer.choices[0].message.tool_calls) == 1


def test_consecutive_turns_of_one_role_are_merged_and_results_come_first(gw, claude_api):
    messages = [
        {"role": "user", "content": "first"}, {"role": "user", "content": "second"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "a"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "b"}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "A"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "B"}]},
        {"role": "user", "content": "and now?"},
    ]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    answer = gw.client().chat.completions.create(model="claude-sonnet", messages=messages, tools=tools,
                                                 tool_choice="none")
    assert answer.choices[0].message.content == "Echo: and now?"
    turns = sent(claude_api)["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert [b["type"] for b in turns[0]["content"]] == ["text", "text"]
    assert [b["type"] for b in turns[1]["content"]] == ["text", "tool_use", "tool_use"]
    assert [b.get("tool_use_id") or b["type"] for b in turns[2]["content"]] == ["call_a", "call_b", "text"]


def test_a_tool_result_without_its_call_is_refused_by_anthropic_as_a_400(gw, claude_api):
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(model="claude-sonnet", messages=[
            {"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_zz", "content": "A"}])
    assert "tool_use_id" in caught.value.message and caught.value.code == "invalid_request_error"


# ---- images and JSON --------------------------------------------------------------------------------

def test_image_parts_become_image_blocks(gw, claude_api):
    gw.client().chat.completions.create(model="claude-sonnet", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/parcel.jpg", "detail": "low"}}]}])
    blocks = sent(claude_api)["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/parcel.jpg"}}


def test_a_bad_image_is_a_400_before_any_call(gw, claude_api):
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(model="claude-sonnet", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}])
    assert "base64" in caught.value.message and claude_api.calls == 0


class Refund(BaseModel):
    order_id: str
    days: int


def test_structured_output_with_langchain(gw, claude_api):
    llm = ChatOpenAI(model="claude-sonnet", base_url=gw.base_url, api_key="sk-client", max_retries=0)
    refund = llm.with_structured_output(Refund).invoke("When is my refund for order 9?")
    assert refund == Refund(order_id="example", days=1)
    body = sent(claude_api)
    assert body["tool_choice"] == {"type": "tool", "name": "json_answer"}
    assert body["tools"][0]["input_schema"]["properties"]["days"] == {"type": "integer", "title": "Days"}


def test_json_mode_streams_the_json_as_content(gw, claude_api):
    client = gw.client()
    kw: dict[str, Any] = {"model": "claude-sonnet", "messages": [{"role": "user", "content": "json please"}],
                          "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {
                              "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}}}
    plain = client.chat.completions.create(**kw)
    assert orjson.loads(plain.choices[0].message.content) == {"ok": True}
    assert plain.choices[0].finish_reason == "stop" and plain.choices[0].message.tool_calls is None
    chunks = list(client.chat.completions.create(stream=True, **kw))
    assert orjson.loads("".join(c.choices[0].delta.content or "" for c in chunks if c.choices)) == {"ok": True}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


@pytest.mark.parametrize("field, value", [("n", 2), ("logprobs", True), ("seed", 7), ("presence_penalty", 0.5),
                                          ("audio", {"voice": "alloy", "format": "wav"})])
def test_what_anthropic_cannot_do_is_a_clear_400(gw, claude_api, field, value):
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(model="claude-sonnet", messages=[{"role": "user", "content": "x"}],
                                            extra_body={field: value})
    assert caught.value.code == "unsupported_parameter" and caught.value.param == field
    assert f"'{field}'" in caught.value.message and "anthropic" in caught.value.message
    assert claude_api.calls == 0


def test_neutral_values_of_unsupported_fields_are_fine(gw, claude_api):
    gw.client().chat.completions.create(model="claude-sonnet", messages=[{"role": "user", "content": "x"}],
                                        n=1, logprobs=False, presence_penalty=0, response_format={"type": "text"})
    assert claude_api.calls == 1


def test_embeddings_to_an_anthropic_model_are_a_400(gw, claude_api):
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().embeddings.create(model="claude-sonnet", input="x")
    assert caught.value.code == "unsupported_endpoint" and claude_api.calls == 0


# ---- usage and cost ---------------------------------------------------------------------------------

def test_prompt_cache_tokens_are_counted_and_priced(gw, claude_api):
    claude_api.set(cache_read=1000, cache_write=200)
    raw = gw.http().post("/v1/chat/completions", json={"model": "claude-sonnet",
                                                       "messages": [{"role": "user", "content": "cached?"}]})
    usage = raw.json()["usage"]
    uncached = usage["prompt_tokens"] - 1200   # Anthropic's input_tokens: the prompt's uncached tokens
    assert uncached > 0
    assert usage["prompt_tokens_details"] == {"cached_tokens": 1000, "cache_write_tokens": 200}
    cost = (uncached * 3.0 + 1000 * 0.30 + 200 * 3.75 + usage["completion_tokens"] * 15.0) / 1e6
    assert float(raw.headers["x-gateway-cost-usd"]) == pytest.approx(cost, abs=1e-8)
    stream = gw.client().chat.completions.create(model="claude-sonnet", stream=True, messages=[
        {"role": "user", "content": "cached?"}], stream_options={"include_usage": True})
    assert [c.usage for c in stream][-1].model_dump(exclude_none=True)["prompt_tokens_details"] == \
        {"cached_tokens": 1000, "cache_write_tokens": 200}
    m = settled(gw, 2)
    assert m.value("gateway_tokens_total", model="claude-sonnet", provider="anthropic", kind="prompt") == \
        2 * usage["prompt_tokens"]
    assert m.value("gateway_cost_usd_total", model="claude-sonnet") == pytest.approx(2 * cost, abs=1e-8)
    assert m.value("gateway_tokens_total", model="claude-sonnet", kind="cached") == 2000
    assert m.value("gateway_tokens_total", model="claude-sonnet", kind="cache_write") == 400


# ---- errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, status, exception", [
    ("invalid_request_error", 400, openai.BadRequestError),
    ("authentication_error", 401, openai.AuthenticationError),
    ("permission_error", 403, openai.PermissionDeniedError),
    ("not_found_error", 404, openai.NotFoundError),
    ("request_too_large", 413, openai.APIStatusError),
    ("rate_limit_error", 429, openai.RateLimitError),
    ("api_error", 500, openai.InternalServerError),
    ("overloaded_error", 503, openai.InternalServerError),
])
def test_anthropic_errors_are_the_sdks_exceptions(gw, claude_api, kind, status, exception):
    claude_api.set(error_type=kind)
    with pytest.raises(exception) as caught:
        gw.client().chat.completions.create(model="claude-sonnet", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == status
    error = caught.value.body
    assert error["message"] == f"fake {kind}" and error["type"] and error["code"]


def test_a_wrong_key_is_anthropics_401(start_gateway, claude_api, upstream):
    cfg = config(claude_api, upstream)
    cfg["providers"]["anthropic"]["api_key"] = "sk-ant-wrong"
    gw = start_gateway(cfg)
    with pytest.raises(openai.AuthenticationError) as caught:
        gw.client().chat.completions.create(model="claude-sonnet", messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["message"] == "invalid x-api-key"


def test_an_error_event_mid_stream_ends_the_stream_with_an_error(gw, claude_api):
    claude_api.set(reply="one two three four five six", stream_error_after=3)
    stream = gw.client().chat.completions.create(model="claude-sonnet", stream=True,
                                                 messages=[{"role": "user", "content": "x"}])
    got = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            got.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(got) == "one two three " and "overloaded_error" in caught.value.message


def test_a_stream_that_stops_short_of_message_stop_ends_with_an_error(gw, claude_api):
    claude_api.set(reply="one two three four", stream_stop_after=2)
    r = gw.http().post("/v1/chat/completions", json={"model": "claude-sonnet", "stream": True,
                                                     "messages": [{"role": "user", "content": "x"}]})
    assert "data: [DONE]" not in r.text and '"code":"upstream_stream_error"' in r.text


# ---- next to an OpenAI-compatible provider ----------------------------------------------------------

def test_a_429_from_openai_falls_back_to_claude(start_gateway, claude_api, upstream):
    gw = start_gateway(config(claude_api, upstream, support={"targets": ["gpt-4o-mini", "claude-sonnet"]}))
    upstream.set(error_status=429)
    raw = gw.http().post("/v1/chat/completions", json={"model": "support",
                                                       "messages": [{"role": "user", "content": "refund?"}]})
    assert raw.status_code == 200 and raw.headers["x-gateway-target"] == "claude-sonnet"
    assert raw.json()["choices"][0]["message"]["content"] == "Echo: refund?"
    assert upstream.calls == 1 and claude_api.calls == 1


def test_anthropics_overloaded_falls_back_to_openai(start_gateway, claude_api, upstream):
    gw = start_gateway(config(claude_api, upstream, support={"targets": ["claude-sonnet", "gpt-4o-mini"]}))
    claude_api.set(error_type="overloaded_error", retry_after="3")
    answer = gw.client().chat.completions.with_raw_response.create(
        model="support", messages=[{"role": "user", "content": "refund?"}])
    assert answer.headers["x-gateway-target"] == "gpt-4o-mini" and claude_api.calls == 1


def test_a_cascade_from_a_cheap_model_to_claude(start_gateway, claude_api, upstream):
    gw = start_gateway(config(claude_api, upstream, support={
        "strategy": "cascade", "targets": ["gpt-4o-mini", "claude-sonnet"],
        "escalate_when": {"finish_reason": ["length"], "min_confidence": 0.5}}))
    upstream.set(finish_reason="length")
    raw = gw.http().post("/v1/chat/completions", json={"model": "support",
                                                       "messages": [{"role": "user", "content": "refund?"}]})
    assert raw.status_code == 200 and raw.headers["x-gateway-target"] == "claude-sonnet"
    assert raw.json()["choices"][0]["finish_reason"] == "stop"
    assert "logprobs" not in sent(claude_api)   # the cascade's own ask, left out for Claude


def test_an_answer_from_claude_is_served_from_the_cache_as_sse(start_gateway, claude_api, upstream):
    cfg = config(claude_api, upstream)
    cfg["cache"] = {"cacheable": "always"}
    gw = start_gateway(cfg)
    client = gw.client()
    messages = [{"role": "user", "content": "opening hours?"}]
    first = client.chat.completions.with_raw_response.create(model="support", messages=messages)
    assert first.headers["x-gateway-cache"] == "miss"
    replay = client.chat.completions.with_raw_response.create(model="support", messages=messages, stream=True)
    assert replay.headers["x-gateway-cache"] == "hit-exact" and claude_api.calls == 1
    text = "".join(c.choices[0].delta.content or "" for c in replay.parse() if c.choices)
    assert text == first.parse().choices[0].message.content == "Echo: opening hours?"


def test_a_streamed_claude_answer_is_cached_whole(start_gateway, claude_api, upstream):
    cfg = config(claude_api, upstream)
    cfg["cache"] = {"cacheable": "always"}
    gw = start_gateway(cfg)
    client = gw.client()
    messages = [{"role": "user", "content": "returns policy?"}]
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="support", messages=messages, stream=True) if c.choices)
    assert eventually(lambda: scrape(gw).value("gateway_cache_entries", layer="exact") == 1)   # stored after the end
    again = client.chat.completions.with_raw_response.create(model="support", messages=messages)
    assert again.headers["x-gateway-cache"] == "hit-exact" and again.parse().choices[0].message.content == streamed
    assert claude_api.calls == 1


def test_two_providers_streams_at_once(start_gateway, claude_api, upstream):
    gw = start_gateway(config(claude_api, upstream, support={"targets": ["claude-sonnet"]},
                              openai={"targets": ["gpt-4o-mini"]}))
    claude_api.set(reply=" ".join(f"c{i}" for i in range(40)), chunk_delay_s=0.005)
    upstream.set(reply=" ".join(f"o{i}" for i in range(40)), chunk_delay_s=0.005)
    texts: dict[str, str] = {}

    def read(route: str) -> None:
        stream = gw.client().chat.completions.create(model=route, stream=True,
                                                     messages=[{"role": "user", "content": route}])
        texts[route] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    threads = [threading.Thread(target=read, args=(r,)) for r in ("support", "openai") for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert texts["support"] == " ".join(f"c{i}" for i in range(40))
    assert texts["openai"] == " ".join(f"o{i}" for i in range(40))
    m = settled(gw, 6)
    assert m.value("gateway_requests_total", route="support") == 3 == m.value("gateway_requests_total",
                                                                              route="openai")


def test_claude_is_listed_in_models(gw):
    r = httpx.get(gw.url + "/v1/models", timeout=10)
    assert "claude-sonnet" in {m["id"] for m in r.json()["data"]}
