"""Every model call goes through `gateway/upstream/call.py`: a client's request carried as one value
(its body never touched), and the gateway's own calls, which never queue for a slot."""

from __future__ import annotations

import copy

import pytest

from gateway.config import ModelConfig, ProviderConfig
from gateway.record import RequestRecord
from gateway.upstream.call import CallFailed, StreamAnswer, call_for_gateway, call_target
from gateway.upstream.client import Provider
from gateway.upstream.request import UpstreamRequest
from gateway.upstream.target import Target


@pytest.fixture
async def provider(upstream):
    opened = Provider("fake", ProviderConfig(base_url=upstream.url, api_key="sk-test", max_concurrency=1))
    opened.open()
    yield opened
    await opened.close()


def target(provider: Provider, name: str) -> Target:
    return Target(name, f"vendor/{name}", provider, ModelConfig(provider="fake"))


async def test_each_target_gets_its_own_body_and_the_clients_stays_as_sent(upstream, provider):
    payload = {"model": "support", "messages": [{"role": "user", "content": "hello"}], "stream": True,
               "stream_options": {"continuous_usage_stats": False}}
    sent = copy.deepcopy(payload)
    request = UpstreamRequest(payload, "/chat/completions", True, {"x-request-id": "req-1"},
                              RequestRecord("req-1", "chat"), ask_usage=True)
    for name in ("model-a", "model-b"):
        answer = await call_target(target(provider, name), request)
        assert isinstance(answer, StreamAnswer)
        assert b"[DONE]" in await answer.response.read()
        answer.response.release()
        answer.release()
    assert payload == sent
    bodies = [seen.body for seen in upstream.seen]
    assert [body["model"] for body in bodies] == ["vendor/model-a", "vendor/model-b"]
    assert all(body["stream_options"] == {"continuous_usage_stats": False, "include_usage": True} for body in bodies)
    assert upstream.seen[0].headers["x-request-id"] == "req-1"
    assert upstream.seen[0].headers["authorization"] == "Bearer sk-test"
    assert provider.limiter.in_flight == 0


async def test_the_gateways_own_calls_take_a_free_slot_or_none(upstream, provider):
    answer = await call_for_gateway(target(provider, "embed"), "/embeddings", {"input": ["hi"]})
    assert answer["object"] == "list" and upstream.seen[-1].body == {"input": ["hi"], "model": "vendor/embed"}
    assert provider.limiter.in_flight == 0
    held = await provider.limiter.try_acquire()      # a client's request holds the only slot
    assert held is not None
    with pytest.raises(CallFailed) as failed:
        await call_for_gateway(target(provider, "embed"), "/embeddings", {"input": ["hi"]})
    assert failed.value.busy and provider.limiter.queued == 0
    assert upstream.calls_to("/v1/embeddings") == 1
    held.release()
