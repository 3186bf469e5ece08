"""The `bedrock` provider type through the gateway: the openai SDK and LangChain's ChatOpenAI talk
OpenAI, the fake Bedrock runtime (tests/fake_bedrock.py) checks each request's SigV4 signature (or
API key) and Converse shape, and answers in JSON, in event-stream frames, or with its errors.

The gateway runs in this process, so AWS credentials are set in the environment before it starts,
with botocore kept away from this machine's ~/.aws and instance metadata.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import botocore.session
import httpx
import openai
import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from .conftest import eventually
from .fake_bedrock import ERRORS, FakeBedrock, encode_frame, event_frame

CLAUDE = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"
PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"
ACCESS_KEY, SECRET, TOKEN = "AKIDBEDROCKTEST01", "test-secret-key", "test-session-token"
API_KEY = "bedrock-api-key-TEST-0001"
# A 1x1 PNG.
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")).decode()
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture(scope="module")
def bedrock() -> Iterator[FakeBedrock]:
    keys = {ACCESS_KEY: (SECRET, TOKEN), "AKIDNOTOKEN": ("other-secret", None)}
    keys.update({f"AKIDPROCESS{n}": (f"process-secret-{n}", None) for n in range(1, 10)})
    fake = FakeBedrock(models={CLAUDE, PROFILE}, credentials=keys, api_keys={API_KEY}).start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def fresh(bedrock: FakeBedrock) -> None:
    bedrock.reset()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """botocore sees only what a test sets: no ~/.aws, no instance role. Returns a setter."""
    empty = tmp_path / "empty"
    empty.write_text("")
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_BEARER_TOKEN_BEDROCK"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "BOTO_CONFIG"):
        monkeypatch.setenv(name, str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    def use(**env: str) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
    return use


@pytest.fixture
def signed_env(aws_env):
    aws_env(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=TOKEN)


def config(fake: FakeBedrock, **provider: Any) -> dict[str, Any]:
    return {
        "providers": {"aws": {"type": "bedrock", "base_url": fake.url, "region": "us-east-1", "timeout_s": 10,
                              **provider}},
        "models": {
            "claude": {"provider": "aws", "name": CLAUDE, "max_tokens": 1024, "input_per_1m": 3000,
                       "output_per_1m": 15000, "cache_read_per_1m": 300, "cache_write_per_1m": 3750},
            "profile": {"provider": "aws", "name": PROFILE},
        },
        "cache": {"cacheable": "never"},     # every request reaches the fake
        "health": {"enabled": False},        # error drills must not open the circuit for the next test
    }


@pytest.fixture
def gw(start_gateway, bedrock, signed_env):
    return start_gateway(config(bedrock))


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# ---- text, plain and streamed -------------------------------------------------------------------

def test_plain_and_streamed_text_are_the_same_answer(gw, bedrock):
    client = gw.client()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there friend"}]
    plain = client.chat.completions.create(model="claude", messages=messages)
    assert plain.choices[0].message.content == "Echo: hello there friend"
    assert plain.choices[0].finish_reason == "stop"
    assert plain.model == CLAUDE
    stream = client.chat.completions.create(model="claude", messages=messages, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens == 8   # 2 + 3 words, 3 a message

    first, second = bedrock.seen
    assert (first.operation, second.operation) == ("converse", "converse-stream")
    assert first.raw_path == "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse"
    assert first.model_id == CLAUDE and first.auth == second.auth == "sigv4"
    assert first.headers["x-amz-security-token"] == TOKEN
    assert first.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    # The model's max_tokens is the limit when the client sets none.
    assert first.body == second.body == {
        "messages": [{"role": "user", "content": [{"text": "hello there friend"}]}],
        "system": [{"text": "Be brief."}], "inferenceConfig": {"maxTokens": 1024}}


def test_frames_split_across_reads_and_paced_stream(gw, bedrock):
    bedrock.set(split_frames=True, chunk_delay_s=0.01)
    stream = gw.client().chat.completions.create(model="claude", messages=user("one two three four"), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: one two three four"


def test_an_arn_model_id_goes_in_one_encoded_path_segment(gw, bedrock):
    answer = gw.client().chat.completions.create(model="profile", messages=user("hi"))
    assert answer.choices[0].message.content == "Echo: hi"
    seen = bedrock.seen[-1]
    assert seen.raw_path == ("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3A"
                             "application-inference-profile%2Fa1b2c3d4e5f6/converse")
    assert seen.model_id == PROFILE
    assert "inferenceConfig" not in seen.body   # neither the client nor the model set a limit


def test_a_whole_conversation_is_translated_exactly(gw, bedrock):
    payload = {
        "model": "claude", "temperature": 0.2, "top_p": 0.9, "stop": ["END"], "max_completion_tokens": 50,
        "user": "alice", "service_tier": "flex", "tool_choice": "required",
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                     "parameters": WEATHER_SCHEMA, "strict": True}}],
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": "Weather in Paris"},
            {"role": "user", "content": [{"type": "text", "text": "and Rome"}, {"type": "text", "text": ""}]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
            {"role": "user", "content": "Thanks"},
        ],
    }
    with gw.http() as http:
        r = http.post("/v1/chat/completions", json=payload)
    assert r.status_code == 200, r.text
    assert bedrock.seen[-1].body == {
        "messages": [
            {"role": "user", "content": [{"text": "Weather in Paris"}, {"text": "and Rome"}]},
            {"role": "assistant", "content": [
                {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "call_2", "name": "get_weather", "input": {"city": "Rome"}}}]},
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": "call_1", "content": [{"text": "sunny"}]}},
                {"toolResult": {"toolUseId": "call_2", "content": [{"text": "rain"}]}},
                {"text": "Thanks"}]},
        ],
        "system": [{"text": "You are terse."}, {"text": "Use tools."}],
        "inferenceConfig": {"maxTokens": 50, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
        "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": WEATHER_SCHEMA},
                                               "description": "Weather in a city", "strict": True}}],
                       "toolChoice": {"any": {}}},
        "requestMetadata": {"user": "alice"},
        "serviceTier": {"type": "flex"},
    }
    call = r.json()["choices"][0]["message"]["tool_calls"][0]   # toolChoice any: the model calls a tool
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"example"}'}


# ---- tools ----------------------------------------------------------------------------------------

@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def test_langchain_tool_round_trip_plain_and_streamed(gw, bedrock):
    llm = ChatOpenAI(model="claude", base_url=gw.base_url, api_key="sk-client", max_retries=0)
    bound = llm.bind_tools([get_weather])
    question = HumanMessage("What is the weather in Oslo?")
    asked = bound.invoke([question])
    assert asked.response_metadata["finish_reason"] == "tool_calls"
    (call,) = asked.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "example"}
    assert call["id"].startswith("tooluse_")
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    final = bound.invoke([question, asked, result])
    assert final.content == "Echo: tool said: sunny in example"
    sent = bedrock.seen[-1].body
    assert sent["messages"][1]["content"] == [{"toolUse": {"toolUseId": call["id"], "name": "get_weather",
                                                           "input": {"city": "example"}}}]
    assert sent["messages"][2]["content"] == [{"toolResult": {"toolUseId": call["id"],
                                                              "content": [{"text": "sunny in example"}]}}]

    bedrock.set(preamble="Let me check.")
    streamed = None
    for chunk in bound.stream([question]):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed.content == "Let me check."
    (call,) = streamed.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "example"}
    final = "".join(c.content for c in bound.stream([question, streamed, ToolMessage("cold", tool_call_id=call["id"])]))
    assert final == "Echo: tool said: cold"


def test_tool_choice_none_and_a_named_tool(gw, bedrock):
    client = gw.client()
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}},
             {"type": "function", "function": {"name": "get_time"}}]
    answer = client.chat.completions.create(model="claude", messages=user("hi"), tools=tools, tool_choice="none")
    assert answer.choices[0].message.content == "Echo: hi"
    assert "toolConfig" not in bedrock.seen[-1].body   # Converse has no "none": no tools, no call
    answer = client.chat.completions.create(model="claude", messages=user("hi"), tools=tools,
                                            tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert answer.choices[0].message.tool_calls[0].function.name == "get_time"
    assert bedrock.seen[-1].body["toolConfig"]["toolChoice"] == {"tool": {"name": "get_time"}}
    assert bedrock.seen[-1].body["toolConfig"]["tools"][1] == {
        "toolSpec": {"name": "get_time", "inputSchema": {"json": {"type": "object", "properties": {}}}}}


# ---- images and structured output -------------------------------------------------------------------

def test_an_image_part_goes_as_bytes_and_a_url_is_refused(gw, bedrock):
    client = gw.client()
    content = [{"type": "text", "text": "what is this?"},
               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]
    answer = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": content}])
    size = len(base64.b64decode(PNG))
    assert answer.choices[0].message.content == f"Echo: what is this? [an image: png, {size} bytes]"
    assert bedrock.seen[-1].body["messages"][0]["content"][1] == {
        "image": {"format": "png", "source": {"bytes": PNG}}}
    calls = len(bedrock.seen)
    for url in ("https://example.com/cat.png", f"data:image/bmp;base64,{PNG}"):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}]}])
        assert caught.value.code == "unsupported_parameter"
        assert caught.value.param == "messages[0].content[0].image_url"
    assert len(bedrock.seen) == calls


class Weather(BaseModel):
    city: str
    celsius: int


def test_structured_output_with_langchain(gw, bedrock):
    llm = ChatOpenAI(model="claude", base_url=gw.base_url, api_key="sk-client", max_retries=0)
    answer = llm.with_structured_output(Weather).invoke("Weather in Oslo?")
    assert answer == Weather(city="example", celsius=1)
    text_format = bedrock.seen[-1].body["outputConfig"]["textFormat"]
    assert text_format["type"] == "json_schema"
    definition = text_format["structure"]["jsonSchema"]
    assert definition["name"] == "Weather"
    assert json.loads(definition["schema"])["required"] == ["city", "celsius"]


# ---- usage and cost -------------------------------------------------------------------------------

def scrape(gw) -> list[Any]:
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Any], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_usage_counts_cache_reads_and_writes_and_is_priced(gw, bedrock):
    bedrock.set(cache_read=100, cache_write=40)
    with gw.http() as http:
        r = http.post("/v1/chat/completions", json={"model": "claude", "messages": user("one two three")})
        streamed = http.post("/v1/chat/completions", json={"model": "claude", "messages": user("one two three"),
                                                            "stream": True, "stream_options": {"include_usage": True}})
    usage = r.json()["usage"]
    # inputTokens 6 (3 words, 3 a message) leaves out the 140 read from and written to the cache.
    assert usage == {"prompt_tokens": 146, "completion_tokens": 4, "total_tokens": 150,
                     "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 40}}
    last = [orjson.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")][-1]
    assert last["choices"] == [] and last["usage"] == usage
    # USD a token: 0.003 in, 0.0003 cache read, 0.00375 cache write, 0.015 out.
    cost = 6 * 0.003 + 100 * 0.0003 + 40 * 0.00375 + 4 * 0.015
    assert float(r.headers["x-gateway-cost-usd"]) == pytest.approx(cost, abs=1e-8)
    assert eventually(lambda: value(scrape(gw), "gateway_requests_total") >= 2)
    samples = scrape(gw)
    assert value(samples, "gateway_tokens_total", model="claude", provider="aws", kind="prompt") == 2 * 146
    assert value(samples, "gateway_tokens_total", model="claude", provider="aws", kind="cached") == 2 * 100
    assert value(samples, "gateway_tokens_total", model="claude", provider="aws", kind="completion") == 2 * 4
    assert value(samples, "gateway_cost_usd_total", model="claude", provider="aws") == pytest.approx(2 * cost)


# ---- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("exception, sdk_error, status", [
    ("ValidationException", openai.BadRequestError, 400),
    ("AccessDeniedException", openai.PermissionDeniedError, 403),
    ("ResourceNotFoundException", openai.NotFoundError, 404),
    ("ThrottlingException", openai.RateLimitError, 429),
    ("ModelNotReadyException", openai.RateLimitError, 429),
    ("ModelTimeoutException", openai.InternalServerError, 504),
    ("ModelErrorException", openai.InternalServerError, 502),
    ("InternalServerException", openai.InternalServerError, 500),
    ("ServiceUnavailableException", openai.InternalServerError, 503),
])
def test_each_bedrock_error_is_the_sdk_exception_for_its_status(gw, bedrock, exception, sdk_error, status):
    assert exception in ERRORS
    bedrock.set(error=exception)
    for stream in (False, True):
        with pytest.raises(sdk_error) as caught:
            gw.client().chat.completions.create(model="claude", messages=user("hi"), stream=stream)
        assert caught.value.status_code == status
        assert f"Amazon Bedrock answered {ERRORS[exception]}: fake Bedrock {exception}" in caught.value.message
        assert caught.value.code == exception   # x-amzn-ErrorType names it


def test_what_converse_refuses_is_the_clients_400(gw, bedrock):
    client = gw.client()
    with pytest.raises(openai.BadRequestError, match="must start with a user message"):
        client.chat.completions.create(model="claude", messages=[{"role": "assistant", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="inferenceConfig.temperature"):
        client.chat.completions.create(model="claude", messages=user("hi"), temperature=1.5)
    with pytest.raises(openai.BadRequestError, match="toolConfig field must be defined"):
        client.chat.completions.create(model="claude", messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                  "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "done"}])
    assert [r.name for r in bedrock.refused] == ["ValidationException"] * 3


def test_a_wrong_secret_is_a_clear_403(start_gateway, bedrock, aws_env):
    aws_env(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY="not-the-secret", AWS_SESSION_TOKEN=TOKEN)
    gw = start_gateway(config(bedrock))
    with pytest.raises(openai.PermissionDeniedError, match="signature we calculated does not match"):
        gw.client().chat.completions.create(model="claude", messages=user("hi"))
    assert [r.name for r in bedrock.refused] == ["InvalidSignatureException"]


def test_an_unknown_access_key_is_a_clear_403(start_gateway, bedrock, aws_env):
    aws_env(AWS_ACCESS_KEY_ID="AKIDUNKNOWN", AWS_SECRET_ACCESS_KEY=SECRET)
    gw = start_gateway(config(bedrock))
    with pytest.raises(openai.PermissionDeniedError, match="security token included in the request is invalid"):
        gw.client().chat.completions.create(model="claude", messages=user("hi"), stream=True)
    assert [r.name for r in bedrock.refused] == ["UnrecognizedClientException"]


def test_no_credentials_anywhere_is_a_clear_500(start_gateway, bedrock, aws_env):
    gw = start_gateway(config(bedrock))
    with pytest.raises(openai.InternalServerError, match="found no AWS credentials") as caught:
        gw.client().chat.completions.create(model="claude", messages=user("hi"))
    assert caught.value.code == "provider_credentials_missing"
    assert bedrock.seen == [] and bedrock.refused == []


def test_a_bedrock_api_key_goes_as_a_bearer_token(start_gateway, bedrock, aws_env):
    gw = start_gateway(config(bedrock, api_key=API_KEY))
    answer = gw.client().chat.completions.create(model="claude", messages=user("hi"))
    assert answer.choices[0].message.content == "Echo: hi"
    seen = bedrock.seen[-1]
    assert seen.auth == "bearer" and seen.headers["authorization"] == f"Bearer {API_KEY}"
    assert "x-amz-date" not in seen.headers
    wrong = start_gateway(config(bedrock, api_key="bedrock-api-key-WRONG"))
    with pytest.raises(openai.PermissionDeniedError, match="make sure your API Key is valid"):
        wrong.client().chat.completions.create(model="claude", messages=user("hi"))


def test_temporary_credentials_are_refreshed_as_botocore_does(start_gateway, bedrock, aws_env, tmp_path):
    """A profile's credential_process gives credentials that expire in 5 minutes: botocore
    refreshes them before each signature (inside its 10-minute window), each a new access key;
    a refresh that fails is a clear 502."""
    counter = tmp_path / "count"
    script = tmp_path / "creds.py"
    failing = tmp_path / "failing"
    script.write_text(f"""
import datetime, json, pathlib, sys
if pathlib.Path({str(failing)!r}).exists():
    sys.exit("the identity provider is down")
path = pathlib.Path({str(counter)!r})
n = int(path.read_text()) + 1 if path.exists() else 1
path.write_text(str(n))
expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)
print(json.dumps({{"Version": 1, "AccessKeyId": f"AKIDPROCESS{{n}}", "SecretAccessKey": f"process-secret-{{n}}",
                  "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}}))
""")
    profile = tmp_path / "config"
    profile.write_text(f"[default]\ncredential_process = {sys.executable} {script}\n")
    aws_env(AWS_CONFIG_FILE=str(profile))
    gw = start_gateway(config(bedrock))
    assert counter.read_text() == "1"   # looked up once, when the provider was built
    client = gw.client()
    for _ in range(2):
        client.chat.completions.create(model="claude", messages=user("hi"))
    keys = [s.headers["authorization"].split("Credential=")[1].split("/")[0] for s in bedrock.seen]
    assert keys == ["AKIDPROCESS2", "AKIDPROCESS3"]
    failing.write_text("")
    with pytest.raises(openai.InternalServerError, match="could not refresh its AWS credentials") as caught:
        client.chat.completions.create(model="claude", messages=user("hi"))
    assert caught.value.status_code == 502 and len(bedrock.seen) == 2


# ---- streams that fail ---------------------------------------------------------------------------

def test_an_exception_frame_mid_stream_makes_the_sdk_raise(gw, bedrock):
    bedrock.set(stream_exception="modelStreamErrorException", exception_after=2)
    stream = gw.client().chat.completions.create(model="claude", messages=user("one two three"), stream=True)
    text = []
    with pytest.raises(openai.APIError, match="modelStreamErrorException: fake Bedrock modelStreamErrorException"):
        for chunk in stream:
            text.append(chunk.choices[0].delta.content or "")
    assert "".join(text) == "Echo: one"


@pytest.mark.parametrize("knob, error", [("cut_after", "broke"), ("eof_after", "ended before"),
                                         ("corrupt_after", "broke")])
def test_a_stream_cut_before_its_end_makes_the_sdk_raise(gw, bedrock, knob, error):
    bedrock.set(**{knob: 2})
    stream = gw.client().chat.completions.create(model="claude", messages=user("one two three"), stream=True)
    with pytest.raises(openai.APIError, match=error):
        list(stream)


def test_a_malformed_tool_use_is_no_answer(gw, bedrock):
    bedrock.set(stop_reason="malformed_tool_use")
    client = gw.client()
    with pytest.raises(openai.InternalServerError, match="malformed_tool_use") as caught:
        client.chat.completions.create(model="claude", messages=user("hi"))
    assert caught.value.status_code == 502
    with pytest.raises(openai.APIError, match="malformed_tool_use"):
        list(client.chat.completions.create(model="claude", messages=user("hi"), stream=True))


# ---- what the adapter refuses ---------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("n", 2), ("logprobs", True), ("top_logprobs", 2), ("seed", 7), ("presence_penalty", 0.5),
    ("frequency_penalty", 1), ("logit_bias", {"50256": -100}), ("parallel_tool_calls", False), ("store", True),
    ("modalities", ["text", "audio"]), ("audio", {"voice": "alloy", "format": "wav"}), ("reasoning_effort", "low"),
    ("service_tier", "scale"), ("response_format", {"type": "json_object"}), ("prediction", {"type": "content"}),
    ("something_new", 1),
])
def test_fields_converse_lacks_are_a_400(gw, bedrock, field, value):
    with gw.http() as http:
        r = http.post("/v1/chat/completions", json={"model": "claude", "messages": user("hi"), field: value})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "unsupported_parameter"
    assert r.json()["error"]["param"] == field
    assert bedrock.seen == []


def test_those_fields_at_their_defaults_pass_and_embeddings_do_not(gw, bedrock):
    with gw.http() as http:
        r = http.post("/v1/chat/completions", json={
            "model": "claude", "messages": user("hi"), "n": 1, "logprobs": False, "presence_penalty": 0,
            "frequency_penalty": 0.0, "parallel_tool_calls": True, "store": False, "response_format": {"type": "text"},
            "service_tier": "auto", "seed": None})
        assert r.status_code == 200, r.text
        refused = http.post("/v1/embeddings", json={"model": "claude", "input": "hi"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unsupported_endpoint"
    assert len(bedrock.seen) == 1


# ---- the fake itself, checked against botocore ------------------------------------------------------

def test_the_fake_frames_decode_with_botocore():
    frame = event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hé"}})
    buffer = EventStreamBuffer()
    buffer.add_data(frame[:7])
    assert list(buffer) == []              # a frame cut short waits for the rest
    buffer.add_data(frame[7:] + encode_frame({":message-type": "event"}, b"{}"))
    first, second = list(buffer)
    assert first.headers == {":event-type": "contentBlockDelta", ":content-type": "application/json",
                             ":message-type": "event"}
    assert orjson.loads(first.payload)["delta"] == {"text": "hé"}
    assert second.payload == b"{}"
    broken = bytearray(frame)
    broken[-6] ^= 1                        # a payload byte: the message CRC no longer matches
    buffer = EventStreamBuffer()
    buffer.add_data(bytes(broken))
    with pytest.raises(ChecksumMismatch):
        list(buffer)


def test_the_fake_speaks_bedrock_to_botocores_own_client(bedrock, aws_env):
    client = botocore.session.get_session().create_client(
        "bedrock-runtime", endpoint_url=bedrock.url, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET, aws_session_token=TOKEN,
        config=Config(parameter_validation=False, retries={"max_attempts": 1}))
    hi = [{"role": "user", "content": [{"text": "hi"}]}]
    assert client.converse(modelId=CLAUDE, messages=hi)["output"]["message"]["content"] == [{"text": "Echo: hi"}]
    events = list(client.converse_stream(modelId=PROFILE, messages=hi)["stream"])
    assert [next(iter(e)) for e in events] == ["messageStart", "contentBlockDelta", "contentBlockDelta",
                                               "contentBlockStop", "messageStop", "metadata"]
    refusals = [
        [{"role": "assistant", "content": [{"text": "hi"}]}],                                   # not the user's first
        hi + hi,                                                                                 # no alternation
        [{"role": "user", "content": [{"text": " "}]}],                                         # blank text
        [{"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": []}}]}],    # answers nothing
        hi + [{"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]}]
        + [{"role": "user", "content": [{"text": "and?"}]}],                                    # toolUse unanswered
    ]
    tools = {"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object"}}}}]}
    for messages in refusals:
        with pytest.raises(client.exceptions.ValidationException):
            client.converse(modelId=CLAUDE, messages=messages, toolConfig=tools)
    with pytest.raises(client.exceptions.ValidationException, match="toolConfig field must be defined"):
        client.converse(modelId=CLAUDE, messages=hi + [
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]}])
    bedrock.set(stream_exception="throttlingException", exception_after=1)
    with pytest.raises(Exception, match="throttlingException"):
        list(client.converse_stream(modelId=CLAUDE, messages=hi)["stream"])


def test_the_fake_refuses_a_changed_body_a_wrong_secret_and_unknown_fields(bedrock):
    url = f"{bedrock.url}/model/{CLAUDE.replace(':', '%3A')}/converse"
    body = orjson.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}]})

    def signed(secret: str, data: bytes = body) -> dict[str, str]:
        request = AWSRequest("POST", url, data=data, headers={"content-type": "application/json"})
        SigV4Auth(Credentials("AKIDNOTOKEN", secret), "bedrock", "us-east-1").add_auth(request)
        return dict(request.headers.items())

    good = signed("other-secret")
    assert httpx.post(url, content=body, headers=good).status_code == 200
    for headers, sent in ((good, body.replace(b"hi", b"ho")), (signed("wrong"), body)):
        r = httpx.post(url, content=sent, headers=headers)
        assert r.status_code == 403
        assert r.headers["x-amzn-errortype"].startswith("InvalidSignatureException:")
        assert "signature we calculated does not match" in r.json()["message"]
    unknown = body.replace(b'"text":"hi"', b'"text":"hi","colour":"red"')
    r = httpx.post(url, content=unknown, headers=signed("other-secret", unknown))
    assert r.status_code == 400 and r.headers["x-amzn-errortype"].startswith("ValidationException:")
    assert 'Unknown parameter in messages[0].content[0]: "colour"' in r.json()["message"]
