"""The `gemini` provider type: OpenAI clients (the openai SDK, LangChain) through the gateway to a
strict fake of Google's Gemini API; answers, streams, tools (with Gemini 3's thought signatures),
images, structured output, n, logprobs, usage with cached and thinking tokens, errors, and what
Gemini cannot do as a clear 400."""

from __future__ import annotations

import base64
import json
from typing import Any, Iterator

import openai
import orjson
import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from .fake_gemini import API_KEY, FakeGemini
from .test_metrics import settled

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
# USD per token: 0.001 in, 0.0002 for a cached prompt token, 0.002 out.
FLASH = {"provider": "google", "name": "gemini-2.5-flash", "input_per_1m": 1000, "cached_input_per_1m": 200,
         "output_per_1m": 2000}
PRO3 = {"provider": "google", "name": "gemini-3-pro-preview", "max_tokens": 64}


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    fake = FakeGemini(name="gemini").start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _fresh(gemini: FakeGemini) -> None:
    gemini.reset()


def config(gemini: FakeGemini, api_key: str | None = API_KEY) -> dict[str, Any]:
    return {"providers": {"google": {"type": "gemini", "base_url": gemini.url, "api_key": api_key, "timeout_s": 10}},
            "models": {"flash": FLASH, "pro3": PRO3},
            "routes": {"support": {"targets": ["flash"]}},
            "cache": {"cacheable": "never"}}


@pytest.fixture
def gw(start_gateway, gemini):
    return start_gateway(config(gemini))


def sent(gemini: FakeGemini, i: int = -1) -> dict[str, Any]:
    return gemini.seen[i].body


def langchain(gw: Any, model: str = "flash", **kw: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=gw.base_url, api_key="sk-client", model=model, max_retries=0, **kw)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# ---- answers ----------------------------------------------------------------------------------------

def test_a_plain_answer_and_its_exact_translation(gw, gemini):
    answer = gw.client().chat.completions.create(model="flash", messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": "Where is my parcel?"}],
        temperature=0.2, top_p=0.9, max_completion_tokens=50, stop=["never said"], seed=7,
        presence_penalty=0.5, frequency_penalty=-0.5, user="customer-7")
    assert answer.object == "chat.completion" and answer.model == "gemini-2.5-flash"
    assert answer.id == "chatcmpl-fake-gemini-000001"
    choice = answer.choices[0]
    assert choice.message.content == "Echo: Where is my parcel?" and choice.finish_reason == "stop"
    assert choice.message.role == "assistant" and choice.index == 0
    assert answer.usage.completion_tokens == 5 and answer.usage.prompt_tokens > 0
    seen = gemini.seen[-1]
    assert seen.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert seen.headers["x-goog-api-key"] == API_KEY and "authorization" not in seen.headers
    assert seen.body == {
        "contents": [{"role": "user", "parts": [{"text": "Where is my parcel?"}]}],
        "systemInstruction": {"parts": [{"text": "You are terse."}, {"text": "Answer in English."}]},
        "generationConfig": {"temperature": 0.2, "topP": 0.9, "presencePenalty": 0.5, "frequencyPenalty": -0.5,
                             "seed": 7, "maxOutputTokens": 50, "stopSequences": ["never said"]},
    }   # `user` is not a generation parameter: not sent


def test_the_models_max_tokens_is_the_default_limit_and_length_the_finish(gw, gemini):
    gemini.set(reply=" ".join(f"w{i}" for i in range(100)))
    answer = gw.client().chat.completions.create(model="pro3", messages=user("long story"))
    assert sent(gemini)["generationConfig"] == {"maxOutputTokens": 64}
    assert answer.choices[0].finish_reason == "length" and len(answer.choices[0].message.content.split()) == 64


@pytest.mark.parametrize("model", ["flash", "pro3"])   # Gemini 3 ends with a thought signature of its own
def test_a_streamed_answer_is_the_plain_one_in_chunks(gw, gemini, model):
    gemini.set(chunk_delay_s=0.01)
    client = gw.client()
    messages = user("What are your opening hours on Sunday?")
    plain = client.chat.completions.create(model=model, messages=messages)
    chunks = list(client.chat.completions.create(model=model, messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))
    upstream_model = {"flash": FLASH, "pro3": PRO3}[model]["name"]
    assert gemini.seen[-1].path == f"/v1beta/models/{upstream_model}:streamGenerateContent?alt=sse"
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content and len([c for c in chunks if c.choices]) > 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage   # the last usageMetadata: the total


def test_the_usage_chunk_is_kept_from_a_client_that_did_not_ask(gw, gemini):
    raw = gw.http().post("/v1/chat/completions", json={"model": "flash", "stream": True, "messages": user("hi")})
    events = [line[6:] for line in raw.text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and all('"usage"' not in e for e in events[:-1])


def test_langchain_invokes_and_streams_the_same_text(gw, gemini):
    llm = langchain(gw)
    invoked = llm.invoke("Do you ship to Norway?")
    streamed = "".join(chunk.content for chunk in llm.stream("Do you ship to Norway?"))
    assert invoked.content == streamed == "Echo: Do you ship to Norway?"
    assert invoked.usage_metadata["output_tokens"] == 6


def test_turns_of_one_role_are_merged_into_one_content(gw, gemini):
    gw.client().chat.completions.create(model="flash", messages=[
        {"role": "user", "content": "First question."},
        {"role": "user", "content": [{"type": "text", "text": "Second part."}]},
        {"role": "assistant", "content": "An answer."},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Thanks."}])
    assert sent(gemini)["contents"] == [
        {"role": "user", "parts": [{"text": "First question."}, {"text": "Second part."}]},
        {"role": "model", "parts": [{"text": "An answer."}]},
        {"role": "user", "parts": [{"text": "Thanks."}]}]


def test_n_candidates_are_choices_plain_and_streamed(gw, gemini):
    client = gw.client()
    plain = client.chat.completions.create(model="flash", messages=user("pick a colour"), n=2)
    assert sent(gemini)["generationConfig"] == {"candidateCount": 2}
    assert [c.index for c in plain.choices] == [0, 1]
    assert {c.message.content for c in plain.choices} == {"Echo: pick a colour"}
    chunks = [c for c in client.chat.completions.create(model="flash", messages=user("pick a colour"), n=2,
                                                        stream=True) if c.choices]
    for index in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices[0].index == index]
        assert mine[0].delta.role == "assistant" and mine[-1].finish_reason == "stop"
        assert "".join(c.delta.content or "" for c in mine) == "Echo: pick a colour"


def test_logprobs_come_back_per_token(gw, gemini):
    answer = gw.client().chat.completions.create(model="flash", messages=user("sure?"), logprobs=True,
                                                 top_logprobs=2)
    assert sent(gemini)["generationConfig"] == {"responseLogprobs": True, "logprobs": 2}
    tokens = answer.choices[0].logprobs.content
    assert [t.token for t in tokens] == ["Echo: ", "sure?"]
    assert tokens[0].logprob == -0.25 and [t.logprob for t in tokens[0].top_logprobs] == [-0.25, -1.25]


@pytest.mark.parametrize("model, thinking", [
    ("flash", {"thinkingBudget": 1024}),     # Gemini 2.5: a budget
    ("pro3", {"thinkingLevel": "low"}),      # Gemini 3: a level
])
def test_reasoning_effort_is_the_thinking_config(gw, gemini, model, thinking):
    gw.client().chat.completions.create(model=model, messages=user("think"), reasoning_effort="low")
    assert sent(gemini)["generationConfig"]["thinkingConfig"] == thinking


def test_audio_and_file_parts_are_inline_data(gw, gemini):
    wav = base64.b64encode(b"RIFF....WAVEfmt ").decode()
    pdf = base64.b64encode(b"%PDF-1.7 fake").decode()
    gw.client().chat.completions.create(model="flash", messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{pdf}", "filename": "a.pdf"}},
        {"type": "text", "text": "Summarise both."}]}])
    assert sent(gemini)["contents"][0]["parts"][:2] == [{"inlineData": {"mimeType": "audio/wav", "data": wav}},
                                                        {"inlineData": {"mimeType": "application/pdf", "data": pdf}}]


def test_a_cascades_own_logprobs_are_not_sent(start_gateway, gemini):
    cfg = config(gemini)
    cfg["routes"]["support"] = {"strategy": "cascade", "targets": ["flash", "pro3"],
                                "escalate_when": {"min_confidence": 0.5}}
    answer = start_gateway(cfg).client().chat.completions.create(model="support", messages=user("sure?"))
    assert answer.choices[0].message.content == "Echo: sure?" and answer.choices[0].logprobs is None
    assert gemini.calls == 1 and "generationConfig" not in sent(gemini)


# ---- prompts Gemini will not answer -----------------------------------------------------------------

def test_a_safety_finish_is_content_filter(gw, gemini):
    gemini.set(finish_reason="SAFETY")
    client = gw.client()
    answer = client.chat.completions.create(model="flash", messages=user("something bad"))
    assert answer.choices[0].finish_reason == "content_filter" and answer.choices[0].message.content is None
    chunks = [c for c in client.chat.completions.create(model="flash", messages=user("bad"), stream=True) if c.choices]
    assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_a_blocked_prompt_is_an_answer_with_content_filter(gw, gemini):
    gemini.set(block_reason="PROHIBITED_CONTENT")
    client = gw.client()
    answer = client.chat.completions.create(model="flash", messages=user("something worse"))
    assert [(c.index, c.message.content, c.finish_reason) for c in answer.choices] == [(0, None, "content_filter")]
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens == 0
    chunks = list(client.chat.completions.create(model="flash", messages=user("worse"), stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices] == [None, "content_filter"]


# ---- tools ------------------------------------------------------------------------------------------

@tool
def order_status(order_id: int) -> str:
    """Look up an order's delivery status."""
    return f"Order {order_id} ships tomorrow."


def test_a_tool_call_round_trip_with_langchain_and_gemini_3_signatures(gw, gemini):
    llm = langchain(gw, "pro3").bind_tools([order_status])
    messages = [HumanMessage("Where is order 12?")]
    called = llm.invoke(messages)
    assert [c["name"] for c in called.tool_calls] == ["order_status"]
    assert called.tool_calls[0]["args"] == {"order_id": 1}      # the fake fills the schema
    assert called.response_metadata["finish_reason"] == "tool_calls"
    declared = sent(gemini)["tools"][0]["functionDeclarations"][0]
    assert declared["name"] == "order_status" and declared["parametersJsonSchema"]["required"] == ["order_id"]
    messages += [called, order_status.invoke(called.tool_calls[0])]
    final = llm.invoke(messages)
    assert final.content == 'Result: [{"output": "Order 1 ships tomorrow."}]'
    contents = sent(gemini)["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    call = contents[1]["parts"][0]
    assert call["functionCall"] == {"name": "order_status", "args": {"order_id": 1}}
    assert call["thoughtSignature"] in gemini.signatures   # it came back in the tool call's id
    assert contents[2]["parts"] == [{"functionResponse": {"name": "order_status",
                                                          "response": {"output": "Order 1 ships tomorrow."}}}]


def test_a_tool_call_without_its_signature_is_refused_by_gemini_3(gw, gemini):
    """A signature lost on the way (an id not the gateway's) gets Google's documented stand-in."""
    history = [{"role": "user", "content": "Where is order 12?"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_from_elsewhere", "type": "function",
                    "function": {"name": "order_status", "arguments": '{"order_id": 12}'}}]},
               {"role": "tool", "tool_call_id": "call_from_elsewhere", "content": "ships tomorrow"}]
    tools = [{"type": "function", "function": {"name": "order_status", "parameters": {"type": "object"}}}]
    answer = gw.client().chat.completions.create(model="pro3", messages=history, tools=tools)
    assert answer.choices[0].message.content == 'Result: [{"output": "ships tomorrow"}]'
    assert sent(gemini)["contents"][1]["parts"][0]["thoughtSignature"] == "skip_thought_signature_validator"
    history[1]["tool_calls"][0]["id"] = "call_" + "0" * 24 + "_bm90LWdlbWluaXM"   # a signature Google never gave
    history[2]["tool_call_id"] = history[1]["tool_calls"][0]["id"]
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(model="pro3", messages=history, tools=tools)
    assert caught.value.body["message"] == "Corrupted thought signature."
    assert caught.value.body["code"] == "invalid_argument"


def test_parallel_calls_stream_with_their_indexes_and_go_back_as_one_turn(gw, gemini):
    gemini.set(function_calls=2)
    client = gw.client()
    tools = [{"type": "function", "function": {"name": "order_status", "description": "Status.", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]}}}]
    chunks = [c for c in client.chat.completions.create(model="pro3", messages=user("orders 1 and 2?"),
                                                        tools=tools, stream=True) if c.choices]
    deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or ()]
    assert [d.index for d in deltas] == [0, 1] and {d.function.name for d in deltas} == {"order_status"}
    assert all(json.loads(d.function.arguments) == {"order_id": 1} for d in deltas)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    ids = [d.id for d in deltas]
    assert len(ids[0]) > 30 and len(ids[1]) == 29 and all(i.startswith("call_") for i in ids)  # one signature
    assert all(set(i) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") for i in ids)
    answer = client.chat.completions.create(model="pro3", tools=tools, messages=[
        *user("orders 1 and 2?"),
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": d.id, "type": "function", "function": {"name": d.function.name, "arguments": d.function.arguments}}
            for d in deltas]},
        {"role": "tool", "tool_call_id": ids[0], "content": '{"status": "shipped"}'},
        {"role": "tool", "tool_call_id": ids[1], "content": "[1, 2]"}])
    assert answer.choices[0].message.content == 'Result: [{"status": "shipped"}, {"output": [1, 2]}]'
    results = sent(gemini)["contents"][2]
    assert results["role"] == "user" and [p["functionResponse"]["name"] for p in results["parts"]] == \
        ["order_status", "order_status"]


@pytest.mark.parametrize("choice, strict, expected", [
    ("required", False, {"mode": "ANY"}),
    ("none", False, {"mode": "NONE"}),
    ({"type": "function", "function": {"name": "refund"}}, False, {"mode": "ANY", "allowedFunctionNames": ["refund"]}),
    ("auto", False, {"mode": "AUTO"}),
    (None, True, {"mode": "VALIDATED"}),     # strict tools: every call held to its schema
])
def test_tool_choice_is_the_function_calling_config(gw, gemini, choice, strict, expected):
    tools = [{"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}},
                                               **({"strict": True} if strict else {})}}
             for name in ("order_status", "refund")]
    extra = {"tool_choice": choice} if choice is not None else {}
    gw.client().chat.completions.create(model="flash", messages=user("help"), tools=tools, **extra)
    assert sent(gemini)["toolConfig"] == {"functionCallingConfig": expected}


def test_a_tool_result_without_its_call_is_a_400(gw, gemini):
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(model="flash", messages=[
            *user("hi"), {"role": "tool", "tool_call_id": "call_nowhere", "content": "42"}])
    assert caught.value.body["param"] == "messages[1].tool_call_id" and gemini.calls == 0


# ---- images and structured output -------------------------------------------------------------------

def test_image_parts_inline_and_by_url(gw, gemini):
    gw.client().chat.completions.create(model="flash", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg?size=2", "detail": "auto"}}]}])
    assert sent(gemini)["contents"][0]["parts"] == [
        {"text": "What is in these?"},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"fileData": {"fileUri": "https://example.com/cat.jpg?size=2", "mimeType": "image/jpeg"}}]


def test_langchain_image_message(gw, gemini):
    answer = langchain(gw).invoke([HumanMessage(content=[
        {"type": "text", "text": "Describe it."},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}])])
    assert answer.content == "Echo: Describe it."
    assert sent(gemini)["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}


class Refund(BaseModel):
    """A refund decision."""

    order_id: int = Field(description="The order.")
    approved: bool
    reason: str = "none given"


def test_structured_output_with_langchain(gw, gemini):
    refund = langchain(gw).with_structured_output(Refund).invoke("Refund order 9?")
    assert refund == Refund(order_id=1, approved=True, reason="example")
    config = sent(gemini)["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    schema = config["responseJsonSchema"]
    assert schema["required"] == ["order_id", "approved", "reason"] and schema["additionalProperties"] is False
    assert "default" not in json.dumps(schema)   # an annotation: left out


def test_json_mode_and_a_const(gw, gemini):
    client = gw.client()
    answer = client.chat.completions.create(model="flash", messages=user("json please"),
                                            response_format={"type": "json_object"})
    assert json.loads(answer.choices[0].message.content) == {"answer": "Echo: json please"}
    assert sent(gemini)["generationConfig"] == {"responseMimeType": "application/json"}
    client.chat.completions.create(model="flash", messages=user("x"), response_format={
        "type": "json_schema", "json_schema": {"name": "k", "schema": {
            "type": "object", "properties": {"kind": {"const": "refund"}}, "required": ["kind"]}}})
    assert sent(gemini)["generationConfig"]["responseJsonSchema"]["properties"]["kind"] == {"enum": ["refund"]}


# ---- usage and cost ---------------------------------------------------------------------------------

def test_cached_and_thinking_tokens_are_counted_and_priced(gw, gemini):
    gemini.set(cached_tokens=4, thoughts_tokens=5)
    raw = gw.http().post("/v1/chat/completions", json={"model": "flash", "messages": user("cached tokens here?")})
    usage = raw.json()["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 4}
    assert usage["completion_tokens"] == 4 + 5 and usage["completion_tokens_details"] == {"reasoning_tokens": 5}
    cost = ((usage["prompt_tokens"] - 4) * 1000 + 4 * 200 + 9 * 2000) / 1e6
    assert float(raw.headers["x-gateway-cost-usd"]) == pytest.approx(cost, abs=1e-9)
    stream = gw.client().chat.completions.create(model="flash", stream=True, messages=user("cached tokens here?"),
                                                 stream_options={"include_usage": True})
    assert [c.usage for c in stream][-1].model_dump(exclude_none=True) == usage
    m = settled(gw, 2)
    prompt = usage["prompt_tokens"]
    assert m.value("gateway_tokens_total", model="flash", provider="google", kind="prompt") == 2 * prompt
    assert m.value("gateway_tokens_total", model="flash", kind="cached") == 8
    assert m.value("gateway_tokens_total", model="flash", kind="completion") == 18
    assert m.value("gateway_cost_usd_total", model="flash", provider="google") == pytest.approx(2 * cost, abs=1e-9)
    assert m.value("gateway_tokens_estimated_total") == 0


# ---- errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("status, code, exception", [
    ("INVALID_ARGUMENT", 400, openai.BadRequestError),
    ("FAILED_PRECONDITION", 400, openai.BadRequestError),
    ("PERMISSION_DENIED", 403, openai.PermissionDeniedError),
    ("NOT_FOUND", 404, openai.NotFoundError),
    ("RESOURCE_EXHAUSTED", 429, openai.RateLimitError),
    ("INTERNAL", 500, openai.InternalServerError),
    ("UNAVAILABLE", 503, openai.InternalServerError),
    ("DEADLINE_EXCEEDED", 504, openai.InternalServerError),
])
def test_googles_errors_are_the_sdks_exceptions(gw, gemini, status, code, exception):
    gemini.set(error_status=status)
    with pytest.raises(exception) as caught:
        gw.client().chat.completions.create(model="flash", messages=user("x"))
    assert caught.value.status_code == code
    assert caught.value.body["message"] == f"fake {status}" and caught.value.body["code"] == status.lower()
    assert caught.value.body["type"]
    if status == "RESOURCE_EXHAUSTED":   # Google's RetryInfo (7s in the body) as Retry-After
        assert caught.value.response.headers["retry-after"] == "7"


def test_a_wrong_key_is_a_401_and_no_key_a_403(start_gateway, gemini):
    gw = start_gateway(config(gemini, api_key="AIza-wrong"))
    with pytest.raises(openai.AuthenticationError) as caught:
        gw.client().chat.completions.create(model="flash", messages=user("x"))
    assert caught.value.body["code"] == "invalid_api_key" and "API key not valid" in caught.value.body["message"]
    keyless = start_gateway(config(gemini, api_key=None))   # and the client sends no key of its own
    raw = keyless.http().post("/v1/chat/completions", json={"model": "flash", "messages": user("x")})
    assert raw.status_code == 403 and raw.json()["error"]["type"] == "permission_error"
    assert "x-goog-api-key" not in gemini.seen[-1].headers


def test_open_mode_sends_the_clients_key_as_googles(start_gateway, gemini):
    gw = start_gateway(config(gemini, api_key=None))
    answer = gw.client(api_key=API_KEY).chat.completions.create(model="flash", messages=user("mine"))
    assert answer.choices[0].message.content == "Echo: mine"
    assert gemini.seen[-1].headers["x-goog-api-key"] == API_KEY and "authorization" not in gemini.seen[-1].headers


def test_an_unknown_model_is_googles_404(start_gateway, gemini):
    cfg = config(gemini)
    cfg["models"]["flash"] = {**FLASH, "name": "palm-2"}
    gw = start_gateway(cfg)
    with pytest.raises(openai.NotFoundError) as caught:
        gw.client().chat.completions.create(model="flash", messages=user("x"))
    assert "models/palm-2 is not found" in caught.value.body["message"]


@pytest.mark.parametrize("knob, says", [
    ({"stream_error_after": 2}, "UNAVAILABLE: The model is overloaded"),
    ({"no_finish_after": 2}, "ended before [DONE]"),
    ({"broken_after": 2}, "broke"),
])
def test_a_stream_that_fails_midway_raises_in_the_sdk(gw, gemini, knob, says):
    gemini.set(reply="one two three four five six", **knob)
    stream = gw.client().chat.completions.create(model="flash", stream=True, messages=user("x"))
    got = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            got.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(got) == "one two " and says in caught.value.message


def test_a_malformed_function_call_is_a_failed_answer_not_an_empty_one(gw, gemini):
    gemini.set(finish_reason="MALFORMED_FUNCTION_CALL")
    client = gw.client()
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="flash", messages=user("x"))
    assert caught.value.status_code == 502 and "MALFORMED_FUNCTION_CALL" in caught.value.message
    with pytest.raises(openai.APIError) as streamed:
        list(client.chat.completions.create(model="flash", messages=user("x"), stream=True))
    assert "MALFORMED_FUNCTION_CALL" in streamed.value.message


def test_invalid_json_from_google_is_a_502(gw, gemini):
    gemini.set(invalid_json=True)
    with pytest.raises(openai.APIStatusError) as caught:
        gw.client().chat.completions.create(model="flash", messages=user("x"))
    assert caught.value.status_code == 502


# ---- what Gemini cannot do --------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("logit_bias", {"50256": -100}),
    ("functions", [{"name": "f", "parameters": {"type": "object"}}]),
    ("audio", {"voice": "alloy", "format": "wav"}),
    ("modalities", ["text", "audio"]),
    ("prediction", {"type": "content", "content": "x"}),
    ("parallel_tool_calls", False),
    ("web_search_options", {}),
])
def test_what_gemini_cannot_do_is_a_clear_400(gw, gemini, field, value):
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(model="flash", messages=user("x"), extra_body={field: value})
    assert caught.value.code == "unsupported_parameter" and caught.value.body["param"] == field
    assert "gemini" in caught.value.message and gemini.calls == 0


@pytest.mark.parametrize("messages, param", [
    ([{"role": "user", "content": "x", "name": "ann"}], "messages[0].name"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]}],
     "messages[0].content[0].image_url"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}",
                                                                       "detail": "high"}}]}],
     "messages[0].content[0].image_url.detail"),
    ([{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}], "messages[0].content[0].file"),
])
def test_parts_gemini_cannot_take_are_a_clear_400(gw, gemini, messages, param):
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(model="flash", messages=messages)
    assert caught.value.code == "unsupported_parameter" and caught.value.body["param"] == param and gemini.calls == 0


def test_a_schema_keyword_gemini_would_ignore_is_refused(gw, gemini):
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(model="flash", messages=user("x"), response_format={
            "type": "json_schema", "json_schema": {"name": "code", "schema": {
                "type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}}}}})
    assert caught.value.code == "unsupported_parameter"
    assert "'pattern' (at response_format.json_schema.schema.properties.code)" in caught.value.message


def test_reasoning_effort_none_on_gemini_3_is_refused(gw, gemini):
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(model="pro3", messages=user("x"), reasoning_effort="none")
    assert caught.value.code == "unsupported_parameter" and gemini.calls == 0


def test_embeddings_to_a_gemini_model_are_a_400(gw, gemini):
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().embeddings.create(model="flash", input="x")
    assert caught.value.code == "unsupported_endpoint" and gemini.calls == 0


def test_fields_with_no_effect_are_let_through_and_not_sent(gw, gemini):
    gw.client().chat.completions.create(model="flash", messages=user("x"), metadata={"team": "a"}, store=False,
                                        safety_identifier="u-1", logprobs=None)
    assert set(sent(gemini)) == {"contents"}
    assert orjson.dumps(sent(gemini)) == b'{"contents":[{"role":"user","parts":[{"text":"x"}]}]}'
