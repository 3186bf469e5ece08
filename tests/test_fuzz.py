"""Generated requests to every endpoint: wrong types, huge and deep values, invalid UTF-8, odd
content parts, absurd numbers, control characters in headers. Every answer is a 2xx or an
OpenAI-shaped 4xx, never a 5xx of the gateway's own, and a good request is served afterwards.

Seeded and bounded for `make test` (GATEWAY_FUZZ_EXAMPLES, default 2000, per test); set it higher
for a longer run (the benchmark's profile).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator
from urllib.parse import quote

import httpx
import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.config import load_config

from .conftest import base_config, serve_app

EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "2000"))
KEY, ADMIN = "sk-fuzz-client", "sk-fuzz-admin"
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory, upstream) -> Iterator[str]:
    cfg = base_config(upstream, admin={"key": ADMIN, "watch": False})
    cfg["auth"] = {"keys": [{"name": "fuzz", "key": KEY, "rpm": 10**9, "tpm": 10**12,
                             "budget": {"usd": 10**6, "period": "day"}}]}
    cfg["routes"]["support"]["cache"] = {"ttl_s": 60}
    path = tmp_path_factory.mktemp("fuzz") / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    server, thread, port = serve_app(create_app(load_config(path)))
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def http(gateway_url: str) -> Iterator[httpx.Client]:
    """One client for every example: its connection is kept, as a real client's would be."""
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        yield client


# ---- what is sent --------------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=16)
roles = st.sampled_from(["user", "system", "developer", "assistant", "tool", "function", "", "USER", "bot"])
part_types = st.sampled_from(["text", "image_url", "input_audio", "file", "refusal", "", "video"])
parts = st.fixed_dictionaries({"type": part_types | values}, optional={"text": values, "image_url": values})
contents = st.text(max_size=200) | st.lists(parts | values, max_size=4) | values
messages = st.lists(st.fixed_dictionaries({"role": roles | values}, optional={
    "content": contents, "name": values, "tool_calls": values, "tool_call_id": values}), max_size=4) | values
FIELDS = ["model", "messages", "stream", "temperature", "top_p", "max_tokens", "max_completion_tokens", "n",
          "stop", "tools", "tool_choice", "response_format", "logprobs", "top_logprobs", "stream_options",
          "seed", "user", "input", "dimensions", "encoding_format", "presence_penalty", "logit_bias", "x"]


@st.composite
def deep(draw) -> Any:
    depth = draw(st.integers(min_value=1, max_value=3000))
    leaf: Any = draw(scalars)
    for _ in range(depth):
        leaf = [leaf]
    return leaf


@st.composite
def json_body(draw) -> dict[str, Any]:
    body: dict[str, Any] = {"model": draw(st.sampled_from(["support", "gpt-4o-mini", "text-embedding-3-small",
                                                           "nope"]) | values),
                            "messages": draw(messages)}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=5)):
        body[name] = draw(values | deep())
    if draw(st.booleans()):
        body["input"] = draw(st.text(max_size=50) | st.lists(st.text(max_size=20), max_size=3) | values)
    return body


def encoded(body: Any, how: str) -> bytes:
    if how == "orjson":
        try:
            return orjson.dumps(body)
        except (TypeError, orjson.JSONEncodeError):   # too deep, an integer too big, NaN...
            how = "json"
    try:
        return json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")   # NaN, lone surrogates
    except (RecursionError, ValueError):
        return b"[" * 5000


bodies = st.one_of(
    st.tuples(json_body(), st.sampled_from(["orjson", "json"])).map(lambda t: encoded(*t)),
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
    deep().map(lambda d: encoded({"model": "support", "messages": [{"role": "user", "content": "hi"}], "x": d},
                                 "json")),
)
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=60)
HEADER_NAMES = ["content-type", "x-gateway-cache-ttl", "cache-control", "x-gateway-max-cost-usd", "x-request-id",
                "accept", "traceparent", "tracestate", "x-gateway-cache", "content-encoding", "openai-organization",
                "x-stainless-retry-count"]
headers = st.dictionaries(st.sampled_from(HEADER_NAMES), header_text | st.sampled_from(
    ["application/json", "text/plain", "gzip", "no-cache, no-store", "99999999999999999999999999999999", "-1",
     "1e309", "0", "60", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]), max_size=4)
auths = st.sampled_from([f"Bearer {KEY}"] * 6 + [f"Bearer {ADMIN}", "Bearer sk-wrong", "", "Basic abc"]) | header_text
ENDPOINTS = [("POST", "/v1/chat/completions")] * 6 + [("POST", "/v1/embeddings")] * 3 + [
    ("GET", "/v1/models"), ("GET", "/v1/models/{x}"), ("POST", "/admin/explain"), ("GET", "/admin/keys"),
    ("GET", "/metrics"), ("GET", "/healthz"), ("GET", "/readyz"), ("POST", "/v1/{x}"), ("PUT", "/v1/chat/completions"),
    ("DELETE", "/v1/models/{x}")]


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        error = response.json()["error"]   # OpenAI-shaped
        assert isinstance(error["message"], str) and error["message"] and "type" in error
        assert "Traceback" not in response.text


# ---- the properties ------------------------------------------------------------------------------

@FUZZ
@given(endpoint=st.sampled_from(ENDPOINTS), body=bodies, extra=headers, auth=auths,
       name=st.text(max_size=30))
def test_generated_requests_never_get_a_gateway_5xx(http, endpoint, body, extra, auth, name):
    method, path = endpoint
    path = path.replace("{x}", quote(name, safe="/:@") or "x")
    sent = {k: v.encode("latin-1") for k, v in {**extra, "authorization": auth}.items()}
    try:
        with http.stream(method, path, content=body if method != "GET" else None, headers=sent) as response:
            response.read()
    except (httpx.InvalidURL, httpx.LocalProtocolError, ValueError, UnicodeError):
        return   # the client library itself refuses to send it
    check(response)


def test_a_good_request_is_served_after_the_fuzz(http):
    r = http.post("/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                  json={"model": "support", "messages": [{"role": "user", "content": "still there?"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    assert http.get("/readyz").status_code == 200
