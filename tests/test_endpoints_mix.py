"""Every inbound API in one scripted mix: chat completions, Anthropic's Messages (native and
translated), the Responses API (translated), legacy completions and embeddings (one of them
partly cached). What /metrics says each endpoint and model spent is what the answers' own usage
says, priced, to a billionth of a dollar."""

from __future__ import annotations

from typing import Any, Iterator

import anthropic
import pytest

from .fake_anthropic import API_KEY, FakeAnthropic
from .test_completions_api import FakeCompletions
from .test_metrics import settled

PRICES = {"gpt-4o-mini": (0.15, 0.60), "claude-sonnet": (3.0, 15.0), "instruct": (1.5, 2.0), "embed": (0.02, 0.0)}


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeCompletions, FakeAnthropic]]:
    openai_fake, claude_fake = FakeCompletions(name="openai").start(), FakeAnthropic(name="anthropic").start()
    yield openai_fake, claude_fake
    openai_fake.stop()
    claude_fake.stop()


def cost(model: str, usage: dict[str, Any]) -> float:
    price_in, price_out = PRICES[model]
    return (usage.get("prompt_tokens", 0) * price_in + usage.get("completion_tokens", 0) * price_out) / 1e6


def test_a_scripted_mix_of_every_endpoint_is_counted_to_the_billionth(start_gateway, fakes):
    openai_fake, claude_fake = fakes
    openai_fake.reset()
    claude_fake.reset()
    models = {name: {"provider": "anthropic" if name == "claude-sonnet" else "openai",
                     "input_per_1m": p_in, "output_per_1m": p_out} for name, (p_in, p_out) in PRICES.items()}
    models["claude-sonnet"]["name"] = "claude-sonnet-4-5"
    gw = start_gateway({
        "providers": {"openai": {"base_url": openai_fake.url, "api_key": "sk-openai"},
                      "anthropic": {"type": "anthropic", "base_url": claude_fake.url, "api_key": API_KEY}},
        "models": models, "routes": {}, "cache": {"cacheable": "deterministic"}})
    http, spent = gw.http(), {name: 0.0 for name in PRICES}
    tokens = {name: 0 for name in PRICES}

    def count(model: str, usage: dict[str, Any]) -> None:
        spent[model] += cost(model, usage)
        tokens[model] += usage.get("prompt_tokens", 0)

    chat = gw.client().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "a b c"}])
    count("gpt-4o-mini", chat.usage.model_dump())
    messages_client = anthropic.Anthropic(base_url=gw.url, api_key="sk-client", max_retries=0)
    for model in ("claude-sonnet", "gpt-4o-mini"):   # native, then translated
        answer = messages_client.messages.create(model=model, max_tokens=50,
                                                 messages=[{"role": "user", "content": "where is it"}])
        count(model, {"prompt_tokens": answer.usage.input_tokens, "completion_tokens": answer.usage.output_tokens})
    response = gw.client().responses.create(model="claude-sonnet", input="one two", max_output_tokens=50)
    count("claude-sonnet", {"prompt_tokens": response.usage.input_tokens,
                            "completion_tokens": response.usage.output_tokens})
    legacy = gw.client().completions.create(model="instruct", prompt="say it", max_tokens=5)
    count("instruct", legacy.usage.model_dump())
    for texts in (["alpha", "beta"], ["alpha", "beta", "gamma"]):   # the second: two of three cached
        raw = http.post("/v1/embeddings", json={"model": "embed", "input": texts}).json()
        count("embed", raw["usage"])
    assert openai_fake.seen[-1].body["input"] == ["gamma"]

    m = settled(gw, 7)
    for endpoint, n in {"chat": 1, "messages": 2, "responses": 1, "completions": 1, "embeddings": 2}.items():
        assert m.value("gateway_requests_total", endpoint=endpoint) == n, endpoint
    for model in PRICES:
        assert m.value("gateway_cost_usd_total", model=model) == pytest.approx(spent[model], abs=1e-9), model
        assert m.value("gateway_tokens_total", model=model, kind="prompt") == tokens[model], model
    assert m.value("gateway_cache_requests_total", layer="embeddings", result="hit") == 2
