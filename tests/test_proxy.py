"""The drop-in contract: the openai SDK and LangChain work unchanged through the gateway."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import base_config, eventually

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How long does a refund take?"}]


def test_chat_completion_through_a_route(gateway, upstream):
    client = gateway.client()
    raw = client.chat.completions.with_raw_response.create(model="support", messages=MESSAGES)
    answer = raw.parse()
    assert answer.choices[0].message.content == "Echo: How long does a refund take?"
    assert answer.usage.total_tokens > 0
    assert raw.headers["x-gateway-route"] == "support"
    assert raw.headers["x-gateway-target"] == "gpt-4o-mini"
    assert raw.headers["x-request-id"]
    seen = upstream.seen[-1]
    assert seen.body["model"] == "gpt-4o-mini"                        # route rewritten to the upstream model
    assert seen.headers["authorization"] == "Bearer sk-provider-secret"  # the provider's key, not the client's
    assert seen.body["messages"] == MESSAGES


def test_plain_model_name_is_its_own_route_and_unknown_fields_pass_through(gateway, upstream):
    client = gateway.client()
    answer = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, temperature=0, extra_body={"vendor_flag": {"a": [1, 2]}},
    )
    assert answer.model == "gpt-4o"
    assert upstream.seen[-1].body["vendor_flag"] == {"a": [1, 2]}
    assert upstream.seen[-1].body["temperature"] == 0


def test_model_alias_sends_the_configured_upstream_name(start_gateway, upstream):
    cfg = base_config(upstream)
    cfg["models"]["fast"] = {"provider": "fake", "name": "vendor/fast-model-v2"}
    gw = start_gateway(cfg)
    gw.client().chat.completions.create(model="fast", messages=MESSAGES)
    assert upstream.seen[-1].body["model"] == "vendor/fast-model-v2"


def test_streamed_text_equals_plain_text(gateway, upstream):
    client = gateway.client()
    plain = client.chat.completions.create(model="support", messages=MESSAGES).choices[0].message.content
    with client.chat.completions.with_streaming_response.create(model="support", messages=MESSAGES, stream=True) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert raw.headers["cache-control"] == "no-cache"
        assert raw.headers["x-accel-buffering"] == "no"
        chunks = list(raw.parse())
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == plain
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_async_sdk_stream_and_create(gateway, upstream):
    client = gateway.async_client()
    plain = await client.chat.completions.create(model="support", messages=MESSAGES)
    stream = await client.chat.completions.create(
        model="support", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
    )
    parts, usage = [], None
    async for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(parts) == plain.choices[0].message.content
    assert usage is not None and usage.total_tokens == plain.usage.total_tokens
    await client.close()


def test_stream_chunks_arrive_as_the_upstream_sends_them(gateway, upstream):
    upstream.set(chunk_delay_s=0.15, reply="one two three four")
    client = gateway.client()
    stream = client.chat.completions.create(model="support", messages=MESSAGES, stream=True)
    arrivals = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    arrivals = [t - arrivals[0] for t in arrivals]
    # Four content chunks paced 150 ms apart reach the client paced too, not all at the end.
    assert len(arrivals) == 4
    assert arrivals[-1] >= 0.3


def test_models_list_names_routes_and_models(gateway):
    ids = {m.id for m in gateway.client().models.list()}
    assert {"support", "gpt-4o-mini", "gpt-4o", "text-embedding-3-small"} <= ids


def test_embeddings(gateway, upstream):
    result = gateway.client().embeddings.create(model="text-embedding-3-small", input=["a cat", "a dog"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 32
    assert upstream.seen[-1].path == "/v1/embeddings"


def test_request_id_is_echoed_and_forwarded(gateway, upstream):
    with gateway.http() as http:
        r = http.post("/v1/chat/completions", json={"model": "support", "messages": MESSAGES},
                      headers={"x-request-id": "req-abc-123"})
        assert r.status_code == 200
        assert r.headers["x-request-id"] == "req-abc-123"
        assert upstream.seen[-1].headers["x-request-id"] == "req-abc-123"
        fresh = http.get("/healthz")
        assert len(fresh.headers["x-request-id"]) == 24


def test_health_and_readiness(gateway):
    with gateway.http() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz").json()
        assert ready["status"] == "ready" and ready["providers"] == ["fake"]


def test_client_key_passes_through_when_provider_has_none(start_gateway, upstream):
    cfg = base_config(upstream)
    del cfg["providers"]["fake"]["api_key"]
    gw = start_gateway(cfg)
    gw.client(api_key="sk-users-own-key").chat.completions.create(model="support", messages=MESSAGES)
    assert upstream.seen[-1].headers["authorization"] == "Bearer sk-users-own-key"


def test_langchain_chat_openai(gateway, upstream):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="support", base_url=gateway.base_url, api_key="sk-client", max_retries=0)
    assert llm.invoke("How long does a refund take?").content == "Echo: How long does a refund take?"
    streamed = "".join(chunk.content for chunk in llm.stream("How long does a refund take?"))
    assert streamed == "Echo: How long does a refund take?"


def test_fallback_to_next_target_when_the_first_is_down(start_gateway, upstream):
    cfg = base_config(upstream)
    cfg["providers"]["down"] = {"base_url": "http://127.0.0.1:9/v1", "connect_timeout_s": 1}
    cfg["models"]["dead-model"] = {"provider": "down"}
    cfg["routes"]["support"] = {"targets": ["dead-model", "gpt-4o-mini"]}
    gw = start_gateway(cfg)
    raw = gw.client().chat.completions.with_raw_response.create(model="support", messages=MESSAGES)
    assert raw.headers["x-gateway-target"] == "gpt-4o-mini"
    assert raw.parse().choices[0].message.content.startswith("Echo:")


@pytest.mark.parametrize("path", ["/v1/models", "/healthz"])
def test_gets_answer_json(gateway, path):
    r = httpx.get(gateway.url + path)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"


def test_models_retrieve_answers_a_served_name_and_404s_others(gateway):
    import openai

    client = gateway.client()
    model = client.models.retrieve("support")
    assert model.id == "support" and model.object == "model"
    assert client.models.retrieve("gpt-4o-mini").owned_by == "fake"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.body["code"] == "model_not_found"


def test_readiness_says_degraded_while_circuits_are_open(start_gateway, upstream):
    cfg = base_config(upstream, health={"failures_to_open": 1, "cooldown_s": 60})
    cfg["providers"]["down"] = {"base_url": "http://127.0.0.1:9/v1", "connect_timeout_s": 1}
    cfg["models"]["dead-model"] = {"provider": "down"}
    cfg["routes"] = {"dead": {"targets": ["dead-model"]}}
    gw = start_gateway(cfg)
    with gw.http() as http:
        assert http.get("/readyz").json()["status"] == "ready"
        assert http.post("/v1/chat/completions", json={"model": "dead", "messages": MESSAGES}).status_code >= 500
        ready = http.get("/readyz")
        # Still 200: failing readiness would take every replica out of the load balancer at once.
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded" and ready.json()["open_circuits"] == ["dead-model"]


def test_stream_usage_off_sends_no_stream_options_and_estimates(start_gateway, upstream):
    cfg = base_config(upstream)
    cfg["providers"]["fake"]["stream_usage"] = False
    gw = start_gateway(cfg)
    records = []
    observer = gw.app.state.observer
    inner = observer.finish
    observer.finish = lambda record, runtime: (records.append(record), inner(record, runtime))
    client = gw.client()
    chunks = list(client.chat.completions.create(model="support", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "stream_options" not in upstream.seen[-1].body          # not the gateway's, not the client's
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Echo:")
    assert eventually(lambda: records and records[-1].usage is not None)
    assert records[-1].usage_estimated and records[-1].usage["completion_tokens"] > 0
    list(client.chat.completions.create(model="support", messages=MESSAGES, stream=True))
    assert "stream_options" not in upstream.seen[-1].body
