"""Input at the edges: JSON nested too deep, paths that are not quite the served ones, request ids
a header cannot carry as given, and failures nobody expected. Each gets an OpenAI-shaped answer,
and each answer is counted in gateway_requests_total and has its log line."""

from __future__ import annotations

import socket
from typing import Any

import orjson
import pytest

from gateway.inbound.openai import MAX_JSON_DEPTH

from .conftest import eventually
from .test_errors import assert_openai_error
from .test_metrics import Scrape, scrape

MESSAGES = [{"role": "user", "content": "hi"}]
UNKNOWN = {"route": "none", "model": "none", "provider": "none", "cache": "bypass"}


class Lines:
    """The gateway's request log lines, as its log thread writes them (instead of stdout)."""

    def __init__(self, gw: Any):
        self.raw = bytearray()
        gw.app.state.observer.log.stream = self

    def write(self, data: bytes) -> None:
        self.raw += data

    def flush(self) -> None:
        pass

    def all(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in bytes(self.raw).splitlines() if line.strip()]

    def wait(self, n: int) -> list[dict[str, Any]]:
        assert eventually(lambda: len(self.all()) >= n), self.all()
        return self.all()


def nested(depth: int) -> Any:
    """`depth` arrays, one inside the other."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def raw_request(gw: Any, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request written as given on a socket (no client normalises its path or headers)."""
    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def settled(gw: Any, n: int) -> Scrape:
    got: list[Scrape] = []
    assert eventually(lambda: got.append(scrape(gw)) or got[-1].value("gateway_requests_total") >= n)
    return got[-1]


# ---- JSON nested too deep ------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint, body", [
    ("/v1/chat/completions", {"model": "support", "messages": MESSAGES}),
    ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hi"}),
])
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 255, 600, 1024, 1100])
def test_json_nested_deeper_than_the_limit_is_400(gateway, upstream, endpoint, body, depth):
    lines = Lines(gateway)
    # The body's own object is the first level: at 255, "x" is 254 deep, past what orjson writes.
    with gateway.http() as http:
        r = http.post(endpoint, content=_dumps_deep(body, depth - 1))
    error = assert_openai_error(r, 400)
    assert error["type"] == "invalid_request_error"
    assert str(MAX_JSON_DEPTH) in error["message"] and "deep" in error["message"]
    assert upstream.calls == 0
    m = settled(gateway, 1)
    assert m.value("gateway_requests_total", status="4xx") == 1
    (line,) = lines.wait(1)
    assert line["status"] == 400 and line["endpoint"] == ("chat" if "chat" in endpoint else "embeddings")


def _dumps_deep(body: dict[str, Any], depth: int) -> bytes:
    """orjson cannot write what it will not read back: the deep part written by hand."""
    head = orjson.dumps(body)[:-1]
    return head + b',"x":' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("endpoint, body", [
    ("/v1/chat/completions", {"model": "support", "messages": MESSAGES, "temperature": 0}),
    ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hi"}),
])
def test_json_nested_up_to_the_limit_is_served(gateway, upstream, endpoint, body):
    deep = {**body, "x": nested(MAX_JSON_DEPTH - 1)}
    with gateway.http() as http:
        assert http.post(endpoint, json=deep).status_code == 200
        # Brackets inside strings are text, not nesting.
        assert http.post(endpoint, json={**body, "user": "[" * 5000 + "{" * 5000}).status_code == 200
    assert upstream.seen[0].body["x"] == deep["x"]


# ---- every answer counted and logged, 500s included ----------------------------------------------


def test_an_unexpected_failure_is_a_500_that_is_counted_and_logged(gateway, upstream, monkeypatch):
    lines = Lines(gateway)

    def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateway.runtime, "authenticate", broken)
    with gateway.http() as http:
        chat = http.post("/v1/chat/completions", json={"model": "support", "messages": MESSAGES},
                         headers={"x-request-id": "req-bug-chat"})
        models = http.get("/v1/models", headers={"x-request-id": "req-bug-models"})
    for r in (chat, models):
        error = assert_openai_error(r, 500)
        assert error["type"] == "server_error" and "a bug" not in error["message"]
    m = settled(gateway, 2)
    assert m.value("gateway_requests_total", status="5xx", **UNKNOWN) == 2
    by_id = {line["request_id"]: line for line in lines.wait(2)}
    assert by_id["req-bug-chat"]["endpoint"] == "chat"
    assert by_id["req-bug-models"]["endpoint"] == "other" and by_id["req-bug-models"]["path"] == "GET /v1/models"
    for line in by_id.values():
        assert line["status"] == 500 and line["level"] == "error" and line["error"] == "internal_error"


# ---- paths --------------------------------------------------------------------------------------


def test_a_trailing_slash_is_an_unknown_path_not_a_redirect(gateway, upstream):
    lines = Lines(gateway)
    with gateway.http() as http:
        r = http.post("/v1/chat/completions/", json={"model": "support", "messages": MESSAGES},
                      headers={"host": "evil.example"})
        assert "location" not in r.headers
        assert_openai_error(r, 404)
        assert_openai_error(http.get("/healthz/", headers={"host": "evil.example"}), 404)
    assert upstream.calls == 0
    assert settled(gateway, 2).value("gateway_requests_total", status="4xx", **UNKNOWN) == 2
    paths = {line["path"]: line for line in lines.wait(2)}
    assert paths["POST /v1/chat/completions/"]["error"] == "unknown_path"
    assert paths["GET /healthz/"]["endpoint"] == "unknown"


@pytest.mark.parametrize("method, path", [
    ("POST", "/v1/chat%2Fcompletions"),
    ("POST", "/v1/chat/completion%73"),
    ("POST", "/v1%2Fembeddings"),
    ("GET", "/v1/model%73"),
    ("GET", "/v1/models%2Fsupport"),
    ("GET", "/metric%73"),
])
def test_a_percent_encoded_path_is_refused(gateway, upstream, method, path):
    lines = Lines(gateway)
    body = orjson.dumps({"model": "support", "messages": MESSAGES})
    status, headers, answer = raw_request(gateway, (
        f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body)
    assert status == 404 and headers["content-type"].startswith("application/json")
    error = orjson.loads(answer)["error"]
    assert error["type"] == "invalid_request_error" and "percent-encoded" in error["message"]
    assert headers["x-request-id"]
    assert upstream.calls == 0
    assert settled(gateway, 1).value("gateway_requests_total", status="4xx", **UNKNOWN) == 1
    (line,) = lines.wait(1)
    assert (line["endpoint"], line["path"], line["error"]) == ("unknown", f"{method} {path}", "encoded_path")


def test_a_model_id_may_be_percent_encoded(start_gateway, upstream):
    from .conftest import base_config

    cfg = base_config(upstream)
    cfg["routes"]["team/support v2"] = {"targets": ["gpt-4o-mini"]}
    gw = start_gateway(cfg)
    # The openai SDK percent-encodes the id in the path: /v1/models/team%2Fsupport%20v2
    assert gw.client().models.retrieve("team/support v2").id == "team/support v2"


# ---- request ids -------------------------------------------------------------------------------


def test_a_printable_ascii_request_id_is_kept_everywhere(gateway, upstream):
    lines = Lines(gateway)
    rid = "req 7/" + "A1b2_~!." * 15   # 126 characters, a space among them
    with gateway.http() as http:
        r = http.post("/v1/chat/completions", json={"model": "support", "messages": MESSAGES},
                      headers={"x-request-id": rid})
    assert r.status_code == 200 and r.headers["x-request-id"] == rid
    assert upstream.seen[-1].headers["x-request-id"] == rid
    (line,) = lines.wait(1)
    assert line["request_id"] == rid and "client_request_id" not in line


@pytest.mark.parametrize("sent, logged", [
    ("réq-ünï-42".encode(), "réq-ünï-42"),                  # UTF-8
    (b"req-\xff\xfe", "req-\\xff\\xfe"),                     # not even UTF-8
    (b"req-\tx", "req-\tx"),                                 # a tab: not printable
    (b"r" * 129, "r" * 128),                                 # too long: replaced, not trimmed
])
def test_a_request_id_a_header_cannot_carry_as_given_is_replaced(gateway, upstream, sent, logged):
    lines = Lines(gateway)
    body = orjson.dumps({"model": "support", "messages": MESSAGES})
    status, headers, _ = raw_request(gateway, (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"x-request-id: " + sent + b"\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body))
    assert status == 200
    rid = headers["x-request-id"]
    assert len(rid) == 24 and set(rid) <= set("0123456789abcdef")   # the gateway's own
    assert upstream.seen[-1].headers["x-request-id"] == rid
    (line,) = lines.wait(1)
    assert line["request_id"] == rid and line["client_request_id"] == logged


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@pytest.mark.parametrize("text", [
    rb'"]]]]"', rb'"[{"', rb'"\\"', rb'"\\\""', rb'"\"]]]]\""', rb'"a\\\\"', rb'"\u005c]"', rb'"\\\\\"}}"',
])
def test_the_depth_read_from_the_bytes_is_the_parsed_depth(text):
    """Strings with brackets, escaped quotes and escaped backslashes around a chain of arrays
    just at, and just past, the limit: only the chain counts."""
    from gateway.inbound.openai import nests_deeper

    for depth, deeper in ((MAX_JSON_DEPTH - 1, False), (MAX_JSON_DEPTH, True)):   # below the body's object
        body = (b'{"model":"m","s":[' + text + b'],"x":' + b"[" * depth + text + b"]" * depth +
                b',"t":' + text + b"}")
        assert (_depth(orjson.loads(body)) > MAX_JSON_DEPTH) == deeper
        assert nests_deeper(body, MAX_JSON_DEPTH) == deeper
