"""Every bad input and every upstream failure gets an OpenAI-shaped error with the right status."""

from __future__ import annotations

import openai
import pytest

from .conftest import base_config, eventually

MESSAGES = [{"role": "user", "content": "hi"}]


def assert_openai_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    if code is not None:
        assert error["code"] == code
    return error


@pytest.mark.parametrize("body, param", [
    (b"{not json", None),
    (b"[1, 2]", None),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
    (b'{"model": 42, "messages": []}', "model"),
    (b'{"model": "support"}', "messages"),
    (b'{"model": "support", "messages": "hello"}', "messages"),
    (b'{"model": "support", "messages": []}', "messages"),
    (b'{"model": "support", "messages": ["hello"]}', "messages[0]"),
    (b'{"model": "support", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
])
def test_bad_requests_are_400(gateway, upstream, body, param):
    with gateway.http() as http:
        r = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    error = assert_openai_error(r, 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert upstream.calls == 0


def test_sdk_raises_matching_exceptions(gateway, upstream):
    client = gateway.client()
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="support", messages=[])
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")


def test_body_over_the_limit_is_413(start_gateway, upstream):
    cfg = base_config(upstream, server={"max_body_bytes": 1000})
    gw = start_gateway(cfg)
    big = {"model": "support", "messages": [{"role": "user", "content": "x" * 2000}]}
    with gw.http() as http:
        assert_openai_error(http.post("/v1/chat/completions", json=big), 413, "request_too_large")

        def chunks():  # no content-length: the limit holds for chunked bodies too
            yield b'{"model": "support", "messages": [{"role": "user", "content": "'
            for _ in range(20):
                yield b"x" * 100
            yield b'"}]}'

        assert_openai_error(http.post("/v1/chat/completions", content=chunks()), 413)
        assert http.post("/v1/chat/completions", json={"model": "support", "messages": MESSAGES}).status_code == 200


def test_upstream_error_status_and_body_pass_through(gateway, upstream):
    client = gateway.client()
    upstream.set(error_status=400)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="support", messages=MESSAGES)
    assert "fake upstream error 400" in err.value.message
    upstream.set(error_status=500)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="support", messages=MESSAGES)
    upstream.set(error_status=429, retry_after="7")
    with gateway.http() as http:
        r = http.post("/v1/chat/completions", json={"model": "support", "messages": MESSAGES})
    assert_openai_error(r, 429)
    assert r.headers["retry-after"] == "7"


def test_upstream_invalid_json_is_502(gateway, upstream):
    upstream.set(invalid_json=True)
    with gateway.http() as http:
        error = assert_openai_error(http.post("/v1/chat/completions", json={"model": "support", "messages": MESSAGES}), 502)
    assert "not JSON" in error["message"]


def test_upstream_unreachable_is_502(start_gateway, upstream):
    cfg = base_config(upstream)
    cfg["providers"]["fake"]["base_url"] = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    gw = start_gateway(cfg)
    with gw.http() as http:
        error = assert_openai_error(http.post("/v1/chat/completions", json={"model": "support", "messages": MESSAGES}), 502)
    assert "could not be reached" in error["message"]
    with pytest.raises(openai.InternalServerError):
        gw.client().chat.completions.create(model="support", messages=MESSAGES)


def test_upstream_timeout_is_504(start_gateway, upstream):
    cfg = base_config(upstream)
    cfg["providers"]["fake"]["timeout_s"] = 0.3
    gw = start_gateway(cfg)
    upstream.set(latency_s=2)
    with gw.http() as http:
        assert_openai_error(http.post("/v1/chat/completions", json={"model": "support", "messages": MESSAGES}), 504, "upstream_timeout")


@pytest.mark.parametrize("knob", [{"broken_after": 2}, {"no_done": True}])
def test_broken_stream_ends_with_an_error_event(gateway, upstream, knob):
    upstream.set(reply="one two three four five", **knob)
    stream = gateway.client().chat.completions.create(model="support", messages=MESSAGES, stream=True)
    got = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            if chunk.choices:
                got.append(chunk.choices[0].delta.content or "")
    assert "stream from provider 'fake'" in str(err.value.message)
    assert eventually(lambda: gateway.runtime.providers["fake"].limiter.in_flight == 0)


def test_gateway_keys(start_gateway, upstream):
    cfg = base_config(upstream, auth={"keys": [{"name": "team-a", "key": "gw-key-a"}]})
    gw = start_gateway(cfg)
    with pytest.raises(openai.AuthenticationError):
        gw.client(api_key="wrong").chat.completions.create(model="support", messages=MESSAGES)
    with gw.http() as http:
        assert_openai_error(http.post("/v1/chat/completions", json={"model": "support", "messages": MESSAGES}), 401, "invalid_api_key")
        assert_openai_error(http.get("/v1/models"), 401)
    assert upstream.calls == 0
    gw.client(api_key="gw-key-a").chat.completions.create(model="support", messages=MESSAGES)
    assert upstream.seen[-1].headers["authorization"] == "Bearer sk-provider-secret"
    # With keys on and a provider that has none, the gateway key is never sent upstream.
    cfg["providers"]["fake"].pop("api_key")
    gw2 = start_gateway(cfg)
    gw2.client(api_key="gw-key-a").chat.completions.create(model="support", messages=MESSAGES)
    assert "authorization" not in upstream.seen[-1].headers


def test_unknown_path_and_method(gateway):
    with gateway.http() as http:
        assert_openai_error(http.get("/v1/nothing-here"), 404)
        assert_openai_error(http.get("/v1/chat/completions"), 405)
