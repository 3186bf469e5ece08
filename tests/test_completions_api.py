"""Legacy completions (`POST /v1/completions`) with the real `openai` SDK: passed through to an
OpenAI-compatible provider (JSON and streams), cached like chat in a key space of their own, and a
clear 400 for a provider type that has no such API."""

from __future__ import annotations

import asyncio
from typing import Iterator

import openai
import orjson
import pytest
from aiohttp import web

from .fake_anthropic import API_KEY, FakeAnthropic
from .fake_upstream import FakeUpstream, Seen
from .conftest import eventually
from .test_metrics import scrape, settled

FIELDS = {"model", "prompt", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop", "suffix",
          "echo", "logprobs", "presence_penalty", "frequency_penalty", "best_of", "logit_bias", "seed", "user"}


class FakeCompletions(FakeUpstream):
    """The OpenAI fake with OpenAI's legacy completions: `prompt` in, `text` out, as the API
    reference has them (unknown fields and a missing prompt refused with OpenAI's 400)."""

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/v1/completions", self.completions)
        return app

    async def completions(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        body = orjson.loads(await request.read())
        self.seen.append(Seen(request.path, body, {k.lower(): v for k, v in request.headers.items()}))
        unknown = sorted(set(body) - FIELDS)
        if unknown or not isinstance(body.get("prompt"), (str, list)):
            message = f"Unrecognized request argument supplied: {unknown[0]}" if unknown else "prompt is required"
            return web.json_response({"error": {"message": message, "type": "invalid_request_error",
                                                "param": unknown[0] if unknown else "prompt", "code": None}}, status=400)
        if self.knobs.error_status:
            return web.json_response({"error": {"message": "fake error", "type": "rate_limit_error", "param": None,
                                                "code": None}}, status=self.knobs.error_status)
        prompt = body["prompt"] if isinstance(body["prompt"], str) else str(body["prompt"][0])
        text = self.knobs.reply if self.knobs.reply is not None else " echo of " + prompt
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                 "total_tokens": len(prompt.split()) + len(text.split())}
        head = {"id": f"cmpl-fake-{self.calls}", "object": "text_completion", "created": 1700000000,
                "model": body["model"]}
        if not body.get("stream"):
            return web.json_response({**head, "choices": [{"text": text, "index": 0, "logprobs": None,
                                                           "finish_reason": "stop"}], "usage": usage})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        words = text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            await resp.write(b"data: " + orjson.dumps({**head, "choices": [{"text": piece, "index": 0, "logprobs": None,
                                                                           "finish_reason": None}]}) + b"\n\n")
            await asyncio.sleep(self.knobs.chunk_delay_s)
        await resp.write(b"data: " + orjson.dumps({**head, "choices": [{"text": "", "index": 0, "logprobs": None,
                                                                       "finish_reason": "stop"}]}) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp


@pytest.fixture(scope="module")
def legacy() -> Iterator[FakeCompletions]:
    fake = FakeCompletions(name="legacy").start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def claude_api() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic(name="anthropic").start()
    yield fake
    fake.stop()


@pytest.fixture
def gw(start_gateway, legacy, claude_api):
    legacy.reset()
    return start_gateway({
        "providers": {"openai": {"base_url": legacy.url, "api_key": "sk-openai", "timeout_s": 10},
                      "anthropic": {"type": "anthropic", "base_url": claude_api.url, "api_key": API_KEY}},
        "models": {"gpt-3.5-turbo-instruct": {"provider": "openai", "input_per_1m": 1.5, "output_per_1m": 2.0},
                   "claude": {"provider": "anthropic", "name": "claude-sonnet-4-5"}},
        "routes": {},
        "cache": {"cacheable": "deterministic"},
    })


def test_a_completion_plain_and_streamed(gw, legacy):
    client = gw.client()
    plain = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=20)
    assert plain.object == "text_completion" and plain.choices[0].text == " echo of Say hi"
    assert legacy.seen[-1].body == {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", "max_tokens": 20}
    streamed = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=20,
                                              stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == plain.choices[0].text
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_a_deterministic_completion_is_cached_and_replayed_as_a_stream(gw, legacy):
    client = gw.client()
    first = client.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt="Opening hours?",
                                                        temperature=0)
    again = client.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt="Opening hours?",
                                                        temperature=0)
    assert (first.headers["x-gateway-cache"], again.headers["x-gateway-cache"]) == ("miss", "hit-exact")
    assert again.parse().choices[0].text == first.parse().choices[0].text and again.parse().object == "text_completion"
    streamed = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Opening hours?",
                                              temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == first.parse().choices[0].text
    assert legacy.calls == 1


def test_a_streamed_completion_is_cached_whole(gw, legacy):
    client = gw.client()
    text = "".join(c.choices[0].text for c in client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Refund?", temperature=0, stream=True) if c.choices)

    assert eventually(lambda: scrape(gw).value("gateway_cache_entries", layer="exact") == 1)   # stored after the end
    raw = client.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt="Refund?", temperature=0)
    assert raw.headers["x-gateway-cache"] == "hit-exact" and raw.parse().choices[0].text == text
    assert legacy.calls == 1


def test_usage_and_cost_are_counted(gw, legacy):
    gw.client().completions.create(model="gpt-3.5-turbo-instruct", prompt="one two three", max_tokens=5)
    m = settled(gw, 1)
    assert m.value("gateway_requests_total", endpoint="completions") == 1
    assert m.value("gateway_tokens_total", model="gpt-3.5-turbo-instruct", kind="prompt") == 3
    assert m.value("gateway_cost_usd_total", model="gpt-3.5-turbo-instruct") == pytest.approx(
        (3 * 1.5 + 5 * 2.0) / 1e6, abs=1e-12)


def test_a_provider_type_without_legacy_completions_is_a_400(gw, claude_api):
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().completions.create(model="claude", prompt="hi", max_tokens=5)
    assert caught.value.code == "unsupported_parameter" and "Legacy completions" in caught.value.message


def test_the_providers_errors_pass_through(gw, legacy):
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().completions.create(model="gpt-3.5-turbo-instruct", prompt="hi", extra_body={"colour": "blue"})
    assert "colour" in caught.value.message
    legacy.set(error_status=429)
    with pytest.raises(openai.RateLimitError):
        gw.client().completions.create(model="gpt-3.5-turbo-instruct", prompt="hi")
    r = gw.http().post("/v1/completions", json={"model": "gpt-3.5-turbo-instruct"})   # no prompt: the gateway's 400
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"


def test_guardrails_mask_the_prompt_and_filter_answers_and_streams(start_gateway, legacy, claude_api):
    legacy.reset()
    gw = start_gateway({
        "providers": {"openai": {"base_url": legacy.url, "api_key": "sk-openai", "timeout_s": 10}},
        "models": {"gpt-3.5-turbo-instruct": {"provider": "openai"}},
        "guardrails": {"pii": {"kind": "pii", "entities": ["email"], "action": "mask", "restore": True},
                       "no-leaks": {"kind": "pattern", "patterns": ["(?i)internal use only"], "action": "block"}},
        "routes": {"support": {"targets": ["gpt-3.5-turbo-instruct"],
                               "guardrails": {"input": ["pii"], "output": ["no-leaks", "pii"]}},
                   "strict": {"targets": ["gpt-3.5-turbo-instruct"], "guardrails": {"input": ["no-leaks"]}}},
    })
    client = gw.client()
    answer = client.completions.create(model="support", prompt=["mail jo@example.com", [1, 2]], max_tokens=20)
    assert legacy.seen[-1].body["prompt"] == ["mail <EMAIL_1>", [1, 2]]
    assert answer.choices[0].text == " echo of mail jo@example.com"   # the placeholder the model echoed, restored
    legacy.set(reply="The memo is internal use only, sorry.")
    cut = client.completions.create(model="support", prompt="memo?", max_tokens=20)
    assert cut.choices[0].text == "The memo is " and cut.choices[0].finish_reason == "content_filter"
    chunks = list(client.completions.create(model="support", prompt="memo?", max_tokens=20, stream=True))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "The memo is " and chunks[-1].choices[0].finish_reason == "content_filter"
    assert all(c.object == "text_completion" for c in chunks)
    r = gw.http().post("/v1/completions", json={"model": "support", "prompt": "x", "stream": True})
    assert "internal" not in r.text.lower() and r.text.endswith("data: [DONE]\n\n")
    r = gw.http().post("/v1/completions", json={"model": "strict", "prompt": ["fine", "INTERNAL USE ONLY memo"]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_filter"
    assert r.json()["error"]["param"] == "prompt"   # where a legacy completion's text is
