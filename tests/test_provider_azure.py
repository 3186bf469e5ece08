"""The `azure` provider type: OpenAI clients (the openai SDK, LangChain) through the gateway to a strict
fake of Azure OpenAI; classic deployment URLs and the v1 API, api-key and Entra ID auth, Azure's
content filter annotations and refusals, its errors, fallbacks on its 429, embeddings, usage and cost."""

from __future__ import annotations

import base64
from typing import Any, Iterator

import httpx
import openai
import orjson
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from .fake_azure import API_KEY, ENTRA_TOKEN, FakeAzure
from .test_metrics import settled

VERSION = "2024-10-21"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
QUESTION = [{"role": "user", "content": "Where is my parcel?"}]
GPT_4O = {"provider": "azure", "name": "gpt-4o-prod", "input_per_1m": 2.5, "output_per_1m": 10.0,
          "cached_input_per_1m": 1.25}


@pytest.fixture(scope="module")
def azure() -> Iterator[FakeAzure]:
    fake = FakeAzure().start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _fresh(azure: FakeAzure) -> None:
    azure.reset()


def config(azure: FakeAzure, api_version: str | None = VERSION, **provider: Any) -> dict[str, Any]:
    return {
        "providers": {"azure": {"type": "azure", "base_url": azure.url, "api_key": API_KEY, "api_version": api_version,
                                "timeout_s": 10, **provider}},
        "models": {
            "gpt-4o": GPT_4O,
            "gpt-4o-mini": {"provider": "azure", "name": "gpt-4o-mini-eu", "input_per_1m": 0.15, "output_per_1m": 0.6},
            "gone": {"provider": "azure", "name": "deleted-deployment"},
            "embed": {"provider": "azure", "name": "embed-small", "input_per_1m": 0.02},
        },
        "routes": {"support": {"targets": ["gpt-4o", "gpt-4o-mini"]}},
        "cache": {"cacheable": "never"},
    }


@pytest.fixture
def gw(start_gateway, azure):
    return start_gateway(config(azure))


def events(raw: str) -> list[Any]:
    return [orjson.loads(line[6:]) for line in raw.split("\n") if line.startswith("data: ") and line != "data: [DONE]"]


# ---- where requests go, and with which key --------------------------------------------------------

def test_a_classic_deployment_url_with_the_api_key(gw, azure):
    answer = gw.client().chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert answer.choices[0].message.content == "Echo: Where is my parcel?"
    assert answer.model == "gpt-4o-2024-11-20"   # Azure names the model behind the deployment
    seen = azure.seen[-1]
    assert seen.path == "/openai/deployments/gpt-4o-prod/chat/completions"
    assert seen.query == {"api-version": VERSION}
    assert seen.headers["api-key"] == API_KEY and "authorization" not in seen.headers
    assert seen.body == {"model": "gpt-4o-prod", "messages": QUESTION}


def test_the_v1_api_without_an_api_version(start_gateway, azure):
    # Azure's v1 docs give the base URL with its /openai/v1 path: the same resource.
    gw = start_gateway(config(azure, api_version=None, base_url=azure.url + "/openai/v1/"))
    answer = gw.client().chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert answer.choices[0].message.content == "Echo: Where is my parcel?"
    streamed = gw.client().chat.completions.create(model="gpt-4o", messages=QUESTION, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "Echo: Where is my parcel?"
    embedded = gw.client().embeddings.create(model="embed", input="parcel")
    assert len(embedded.data[0].embedding) == 32
    assert [(s.path, s.query, s.body["model"]) for s in azure.seen] == [
        ("/openai/v1/chat/completions", {}, "gpt-4o-prod"), ("/openai/v1/chat/completions", {}, "gpt-4o-prod"),
        ("/openai/v1/embeddings", {}, "embed-small")]


def test_an_entra_id_token_as_bearer(start_gateway, azure):
    gw = start_gateway(config(azure, api_key=ENTRA_TOKEN, auth="bearer"))
    gw.client().chat.completions.create(model="gpt-4o", messages=QUESTION)
    headers = azure.seen[-1].headers
    assert headers["authorization"] == f"Bearer {ENTRA_TOKEN}" and "api-key" not in headers


@pytest.mark.parametrize("auth, header, value", [("api-key", "api-key", API_KEY),
                                                 ("bearer", "authorization", f"Bearer {ENTRA_TOKEN}")])
def test_open_mode_sends_the_clients_token_the_way_auth_says(start_gateway, azure, auth, header, value):
    cfg = config(azure, auth=auth)
    del cfg["providers"]["azure"]["api_key"]
    gw = start_gateway(cfg)
    token = API_KEY if auth == "api-key" else ENTRA_TOKEN
    gw.client(api_key=token).chat.completions.create(model="gpt-4o", messages=QUESTION)
    headers = azure.seen[-1].headers
    assert headers[header] == value
    assert ("authorization" in headers) == (auth == "bearer") and ("api-key" in headers) == (auth == "api-key")


def test_with_a_key_of_its_own_the_clients_token_is_not_sent(gw, azure):
    gw.client(api_key="sk-someone-elses").chat.completions.create(model="gpt-4o", messages=QUESTION)
    headers = azure.seen[-1].headers
    assert headers["api-key"] == API_KEY and "authorization" not in headers


# ---- answers and streams --------------------------------------------------------------------------

def test_azures_filter_annotations_pass_through(gw, azure):
    body = gw.http().post("/v1/chat/completions", json={"model": "gpt-4o", "messages": QUESTION}).json()
    assert body["prompt_filter_results"][0]["content_filter_results"]["jailbreak"] == {"filtered": False,
                                                                                        "detected": False}
    assert body["choices"][0]["content_filter_results"]["violence"] == {"filtered": False, "severity": "safe"}
    assert body["usage"]["prompt_tokens_details"] == {"audio_tokens": 0, "cached_tokens": 0}


def test_a_streamed_answer_is_the_plain_one_in_chunks(gw, azure):
    azure.set(reply="Your parcel left the depot this morning and arrives tomorrow.", chunk_delay_s=0.002)
    client = gw.client()
    plain = client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=QUESTION, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 5   # as it came, not at once
    assert chunks[0].choices == [] and chunks[0].model_extra["prompt_filter_results"]   # Azure's first chunk
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_the_usage_chunk_is_asked_for_and_kept_from_a_client_that_did_not_ask(gw, azure):
    raw = gw.http().post("/v1/chat/completions", json={"model": "gpt-4o", "messages": QUESTION, "stream": True})
    got = events(raw.text)
    assert azure.seen[-1].body["stream_options"] == {"include_usage": True}
    assert raw.text.rstrip().endswith("data: [DONE]")
    assert all("usage" not in e or e["usage"] is None for e in got)
    assert got[0]["choices"] == [] and got[0]["prompt_filter_results"]   # the filter chunk is not a usage chunk
    assert got[1]["choices"][0]["delta"]["role"] == "assistant"


def test_langchain_streams_and_invokes_the_same_text(gw, azure):
    llm = ChatOpenAI(model="gpt-4o", base_url=gw.base_url, api_key="sk-client", max_retries=0)
    whole = llm.invoke("How do I reset my password?")
    pieces = "".join(chunk.content for chunk in llm.stream("How do I reset my password?"))
    assert whole.content == pieces == "Echo: How do I reset my password?"
    assert whole.usage_metadata["output_tokens"] == 7   # the fake counts words


def test_a_broken_stream_makes_the_sdk_raise(gw, azure):
    azure.set(reply="one two three four five six", broken_after=3)
    stream = gw.client().chat.completions.create(model="gpt-4o", stream=True, messages=QUESTION)
    got = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            got.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(got) == "one two three" and "broke" in caught.value.message


def test_an_image_part_reaches_azure(gw, azure):
    content = [{"type": "text", "text": "What is on this label?"},
               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}}]
    answer = gw.client().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": content}])
    assert answer.choices[0].message.content.rstrip() == "Echo: What is on this label?"   # the fake joins the parts
    assert azure.seen[-1].body["messages"][0]["content"] == content


class Delivery(BaseModel):
    city: str
    days: int


def test_structured_output_with_langchain(gw, azure):
    llm = ChatOpenAI(model="gpt-4o", base_url=gw.base_url, api_key="sk-client", max_retries=0)
    got = llm.with_structured_output(Delivery, method="json_schema").invoke("When does it arrive in Lyon?")
    assert got == Delivery(city="example", days=1)
    assert azure.seen[-1].body["response_format"]["type"] == "json_schema"


# ---- tools ----------------------------------------------------------------------------------------

@tool
def order_status(order_id: str) -> str:
    """Look up the status of an order."""
    return f"order {order_id} shipped"


def test_a_tool_call_round_trip_with_langchain(gw, azure):
    llm = ChatOpenAI(model="gpt-4o", base_url=gw.base_url, api_key="sk-client", max_retries=0)
    with_tools = llm.bind_tools([order_status])
    question = HumanMessage("Where is order 42?")
    first = with_tools.invoke([question])
    [call] = first.tool_calls
    assert call["name"] == "order_status" and call["args"] == {"order_id": "example"}
    assert first.response_metadata["finish_reason"] == "tool_calls"
    result = ToolMessage(order_status.invoke(call["args"]), tool_call_id=call["id"])
    final = with_tools.invoke([question, first, result])
    assert final.content == "Echo: Where is order 42?" and not final.tool_calls
    sent = azure.seen[-1].body["messages"]   # the fake refuses a tool result that answers no call
    assert sent[1]["tool_calls"][0]["id"] == call["id"] and sent[2] == {
        "role": "tool", "content": "order example shipped", "tool_call_id": call["id"]}


def test_a_streamed_tool_call_is_the_plain_one(gw, azure):
    tools = [{"type": "function", "function": {"name": "order_status", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]
    client = gw.client()
    plain = client.chat.completions.create(model="gpt-4o", messages=QUESTION, tools=tools)
    name, arguments, finish = "", "", None
    for chunk in client.chat.completions.create(model="gpt-4o", messages=QUESTION, tools=tools, stream=True):
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                name += call.function.name or ""
                arguments += call.function.arguments or ""
            finish = choice.finish_reason or finish
    [call] = plain.choices[0].message.tool_calls
    assert (name, arguments, finish) == (call.function.name, call.function.arguments, "tool_calls")
    assert orjson.loads(arguments) == {"order_id": "example"}


# ---- the content filter ---------------------------------------------------------------------------

def test_a_filtered_prompt_is_a_bad_request_with_code_content_filter(gw, azure):
    azure.set(filter_prompt=True)
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(model="support", messages=QUESTION)
    error = caught.value
    assert error.status_code == 400 and error.code == "content_filter" and error.param == "prompt"
    assert error.body["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert error.body["innererror"]["content_filter_result"]["violence"] == {"filtered": True, "severity": "high"}
    assert len(azure.seen) == 1   # a refusal is the client's answer: no fallback to the route's next target


def test_an_answer_cut_by_the_filter_ends_in_content_filter(gw, azure):
    azure.set(filter_completion=True, reply="one two three four")
    client = gw.client()
    answer = client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert answer.choices[0].finish_reason == "content_filter" and answer.choices[0].message.content is None
    assert answer.choices[0].model_extra["content_filter_results"]["violence"]["filtered"] is True
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=QUESTION, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"


# ---- errors ---------------------------------------------------------------------------------------

def test_a_429_falls_back_to_the_routes_next_target(gw, azure):
    azure.set(error_status=429, error_times=1, retry_after="3")
    raw = gw.client().chat.completions.with_raw_response.create(model="support", messages=QUESTION)
    assert raw.headers["x-gateway-target"] == "gpt-4o-mini"
    assert raw.parse().model == "gpt-4o-mini-2024-07-18"
    assert [s.path for s in azure.seen] == ["/openai/deployments/gpt-4o-prod/chat/completions",
                                            "/openai/deployments/gpt-4o-mini-eu/chat/completions"]
    m = settled(gw, 1)
    assert m.value("gateway_fallbacks_total", route="support") == 1
    assert m.value("gateway_upstream_errors_total", provider="azure", kind="http_429") == 1


def test_a_429_with_no_target_left_is_a_rate_limit_error_with_retry_after(gw, azure):
    azure.set(error_status=429, retry_after="7")
    with pytest.raises(openai.RateLimitError) as caught:
        gw.client().chat.completions.create(model="gpt-4o", messages=QUESTION)
    error = caught.value
    assert error.response.headers["retry-after"] == "7"
    assert error.code == "rate_limit_exceeded" and error.type == "rate_limit_error"
    assert "exceeded token rate limit" in error.message


@pytest.mark.parametrize("status, message", [
    (500, "The server had an error while processing your request."),   # the model's, OpenAI-shaped already
    (503, "The service is temporarily unable to process your request."),   # Azure's front: code and message
    (502, "Azure OpenAI answered 502: <html>"),                             # a proxy's HTML page
])
def test_azures_server_errors_are_openai_shaped(gw, azure, status, message):
    azure.set(error_status=status)
    with pytest.raises(openai.InternalServerError) as caught:
        gw.client().chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert caught.value.status_code == status and caught.value.type == "server_error"
    assert caught.value.body["message"].startswith(message)


def test_a_deployment_that_does_not_exist_is_a_404(gw, azure):
    with pytest.raises(openai.NotFoundError) as caught:
        gw.client().chat.completions.create(model="gone", messages=QUESTION)
    assert caught.value.code == "DeploymentNotFound" and caught.value.type == "invalid_request_error"
    assert azure.seen[-1].path == "/openai/deployments/deleted-deployment/chat/completions"


def test_a_wrong_key_is_a_401(start_gateway, azure):
    gw = start_gateway(config(azure, api_key="not-the-key"))
    with pytest.raises(openai.AuthenticationError) as caught:
        gw.client().chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert caught.value.code == "invalid_api_key" and caught.value.type == "authentication_error"
    assert "invalid subscription key" in caught.value.message


def test_a_bad_entra_id_token_is_a_401(start_gateway, azure):
    gw = start_gateway(config(azure, api_key="eyJ.expired.token", auth="bearer"))
    with pytest.raises(openai.AuthenticationError) as caught:
        gw.client().chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert caught.value.type == "authentication_error"
    assert "Access token is missing, invalid" in caught.value.body["message"]


def test_an_unknown_api_version_is_azures_400(start_gateway, azure):
    gw = start_gateway(config(azure, api_version="2099-01-01"))
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert caught.value.body["message"] == "API version not supported" and caught.value.code == "BadRequest"


def test_an_older_api_version_streams_with_stream_usage_off(start_gateway, azure):
    # Before 2024-09-01 Azure refuses stream_options, which the gateway sends to count a stream's tokens.
    gw = start_gateway(config(azure, api_version="2024-06-01"))
    with pytest.raises(openai.BadRequestError) as caught:
        list(gw.client().chat.completions.create(model="gpt-4o", messages=QUESTION, stream=True))
    assert "stream_options" in caught.value.message
    gw = start_gateway(config(azure, api_version="2024-06-01", stream_usage=False))
    chunks = list(gw.client().chat.completions.create(model="gpt-4o", messages=QUESTION, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: Where is my parcel?"
    assert "stream_options" not in azure.seen[-1].body
    m = settled(gw, 1)
    assert m.value("gateway_tokens_estimated_total", model="gpt-4o", kind="completion") > 0


@pytest.mark.parametrize("body, message", [
    ({"messages": QUESTION, "temperature_hint": 1}, "Unrecognized request argument supplied: temperature_hint"),
    ({"messages": [{"role": "tool", "content": "42", "tool_call_id": "call_1"}]}, "must be a response to a preceeding"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "Invalid value: 'robot'"),
])
def test_what_azure_refuses_reaches_the_client_as_its_400(gw, azure, body, message):
    r = gw.http().post("/v1/chat/completions", json={"model": "gpt-4o", **body})
    assert r.status_code == 400 and message in r.json()["error"]["message"]
    assert r.json()["error"]["type"] == "invalid_request_error"


# ---- embeddings, usage and cost -------------------------------------------------------------------

def test_embeddings_through_a_deployment(gw, azure):
    embedded = gw.client().embeddings.create(model="embed", input=["where is my parcel", "refund please"])
    assert [d.index for d in embedded.data] == [0, 1] and embedded.model == "text-embedding-3-small"
    assert embedded.usage.prompt_tokens == 6
    seen = azure.seen[-1]
    assert seen.path == "/openai/deployments/embed-small/embeddings" and seen.query == {"api-version": VERSION}
    with pytest.raises(openai.BadRequestError) as caught:   # a chat deployment does not embed
        gw.client().embeddings.create(model="gpt-4o", input="x")
    assert caught.value.code == "OperationNotSupported"
    m = settled(gw, 2)
    assert m.value("gateway_cost_usd_total", model="embed", provider="azure") == pytest.approx(6 * 0.02 / 1e6)


def test_usage_with_cached_tokens_is_counted_and_priced(gw, azure):
    azure.set(cached_tokens=4)
    raw = gw.http().post("/v1/chat/completions", json={"model": "gpt-4o", "messages": QUESTION})
    usage = raw.json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 4
    cost = ((usage["prompt_tokens"] - 4) * 2.5 + 4 * 1.25 + usage["completion_tokens"] * 10.0) / 1e6
    assert float(raw.headers["x-gateway-cost-usd"]) == pytest.approx(cost, abs=1e-9)
    list(gw.client().chat.completions.create(model="gpt-4o", messages=QUESTION, stream=True))
    m = settled(gw, 2)
    prompt = m.value("gateway_tokens_total", model="gpt-4o", provider="azure", kind="prompt")
    assert prompt == 2 * usage["prompt_tokens"]
    assert m.value("gateway_tokens_total", model="gpt-4o", provider="azure", kind="cached") == 8
    assert m.value("gateway_tokens_estimated_total", model="gpt-4o") == 0   # the stream's usage chunk was read
    assert m.value("gateway_cost_usd_total", model="gpt-4o", provider="azure") == pytest.approx(2 * cost, abs=1e-9)


def test_a_streamed_answer_is_cached_with_its_own_id_and_model(start_gateway, azure):
    cfg = config(azure)
    cfg["cache"] = {"cacheable": "deterministic"}
    gw = start_gateway(cfg)
    body = {"model": "gpt-4o", "messages": QUESTION, "temperature": 0}
    streamed = events(gw.http().post("/v1/chat/completions", json={**body, "stream": True}).text)
    hit = gw.http().post("/v1/chat/completions", json=body)
    assert hit.headers["x-gateway-cache"] == "hit-exact" and len(azure.seen) == 1
    assert hit.json()["id"] == streamed[1]["id"] and hit.json()["model"] == "gpt-4o-2024-11-20"


def test_the_fake_refuses_what_azure_refuses():
    """The fake itself, spoken to directly: what the gateway's tests rely on it refusing."""
    fake = FakeAzure().start()
    try:
        base = fake.url + "/openai/deployments/gpt-4o-prod/chat/completions"
        body = {"messages": QUESTION}
        key = {"api-key": API_KEY}
        cases = [
            (httpx.post(base, json=body, headers=key), 404, "404"),                                  # no api-version
            (httpx.post(base + "?api-version=2024-10-21", json=body), 401, "401"),                   # no key
            (httpx.post(base + "?api-version=2024-10-21", json=body,     # a key is no bearer token here
                        headers={"authorization": f"Bearer {API_KEY}"}), 401, None),
            (httpx.post(fake.url + "/openai/deployments/nope/chat/completions?api-version=2024-10-21", json=body,
                        headers=key), 404, "DeploymentNotFound"),
            (httpx.post(fake.url + "/openai/v1/chat/completions?api-version=2024-10-21",
                        json={**body, "model": "gpt-4o-prod"}, headers=key), 400, "BadRequest"),
        ]
        for response, status, code in cases:
            got = response.json().get("error", {}).get("code")   # None: API management's {statusCode, message}
            assert (response.status_code, got) == (status, code), response.text
        ok = httpx.post(fake.url + "/openai/v1/chat/completions", json={**body, "model": "gpt-4o-prod"},
                        headers={"authorization": f"Bearer {API_KEY}"})   # v1 takes the key as a bearer token
        assert ok.status_code == 200
    finally:
        fake.stop()
