"""What one client may hold of a real `gateway serve`: the size and number of its headers, the time
to send them and the body (OpenAI-shaped 431 and 408, the connection closed); and the open mode:
no gateway keys on an address others can reach needs `server.allow_open`."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from gateway.cli import open_gateway_refusal, open_gateway_warnings
from gateway.config import load_config

from .conftest import base_config, eventually
from .test_shutdown import Serving, read_all

ROOT = Path(__file__).resolve().parent.parent
LIMITS = {"max_header_bytes": 8192, "max_headers": 20, "header_timeout_s": 1, "body_timeout_s": 1}


@pytest.fixture(scope="module")
def gw(tmp_path_factory, upstream):
    served = Serving(tmp_path_factory.mktemp("limits"), base_config(upstream, server=LIMITS))
    yield served
    served.kill()


def connect(gw: Serving) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gw.port), timeout=10)


def answer(data: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Status, headers and JSON body of one HTTP/1.1 response (with content-length)."""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, orjson.loads(body[: int(headers["content-length"])])


def assert_refused(data: bytes, status: int, code: str) -> dict[str, Any]:
    got, headers, body = answer(data)
    assert got == status, data[:300]
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code and body["error"]["type"] == "invalid_request_error"
    return body["error"]


def request(path: str = "/healthz", *headers: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


def test_a_32_mib_header_value_is_refused_with_431_as_soon_as_it_passes_the_limit(gw):
    s = connect(gw)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: ")
    piece, sent, total = b"a" * 65536, 0, 32 * 1024 * 1024
    while sent < total:
        if select.select([s], [], [], 0)[0]:
            break   # the answer is there before the rest was sent
        try:
            s.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(piece)
    assert sent < total
    error = assert_refused(read_all(s), 431, "request_header_fields_too_large")
    assert "8192 bytes" in error["message"]
    assert httpx.get(gw.url + "/healthz").status_code == 200


def test_headers_over_max_header_bytes_get_431_and_under_it_pass(gw):
    s = connect(gw)
    s.sendall(request("/healthz", "X-Pad: " + "p" * 9000))
    assert_refused(read_all(s), 431, "request_header_fields_too_large")
    s = connect(gw)
    s.sendall(request("/" + "u" * 9000))   # the URL counts too
    assert_refused(read_all(s), 431, "request_header_fields_too_large")
    assert httpx.get(gw.url + "/healthz", headers={"x-pad": "p" * 7000}).status_code == 200


def test_more_than_max_headers_get_431(gw):
    s = connect(gw)
    s.sendall(request("/healthz", *(f"X-H{i}: v" for i in range(20))))   # with Host: 21
    error = assert_refused(read_all(s), 431, "request_header_fields_too_large")
    assert "more than 20 headers" in error["message"]
    s = connect(gw)
    s.sendall(request("/healthz", *(f"X-H{i}: v" for i in range(19))))   # with Host: 20
    assert receive_one(s).startswith(b"HTTP/1.1 200 ")
    s.close()


def test_headers_that_do_not_arrive_in_time_get_408_however_steadily_they_drip(gw):
    s = connect(gw)
    started = time.monotonic()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    for _ in range(20):   # a byte every 0.2 s would keep a per-read timeout from ever firing
        time.sleep(0.2)
        try:
            s.sendall(b"z")
        except (BrokenPipeError, ConnectionResetError):
            break
        if select.select([s], [], [], 0)[0]:
            break
    error = assert_refused(read_all(s), 408, "request_timeout")
    assert "headers" in error["message"]
    assert time.monotonic() - started < 3


def test_a_connection_that_sends_nothing_is_closed(gw):
    s = connect(gw)
    started = time.monotonic()
    assert read_all(s) == b""   # no request: nothing to answer
    assert time.monotonic() - started < 3


def test_a_body_that_does_not_arrive_in_time_gets_408(gw):
    s = connect(gw)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 200\r\n\r\n{\"model\": \"support\"")
    started = time.monotonic()
    error = assert_refused(read_all(s), 408, "request_timeout")
    assert "body" in error["message"]
    assert time.monotonic() - started < 3


def test_a_slow_body_in_time_and_an_idle_keep_alive_connection_are_served(gw):
    body = orjson.dumps({"model": "support", "messages": [{"role": "user", "content": "ping"}]})
    s = connect(gw)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body))
    for i in range(0, len(body), 20):   # in pieces, 0.1 s apart, within the body's second
        s.sendall(body[i:i + 20])
        time.sleep(0.1)
    status, headers, answered = answer(receive_one(s))
    assert status == 200 and answered["choices"][0]["message"]["content"] == "Echo: ping"
    time.sleep(1.5)   # idle between requests longer than header_timeout_s: the keep-alive's time, not the headers'
    s.sendall(request("/healthz"))
    assert receive_one(s).startswith(b"HTTP/1.1 200 ")
    s.close()


def receive_one(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += s.recv(65536)
    return head + b"\r\n\r\n" + body


def test_the_refusals_are_counted_and_logged_like_any_answer(gw):
    s = connect(gw)
    s.sendall(request("/healthz", "X-Pad: " + "p" * 9000))
    _, too_large, _ = answer(read_all(s))
    s = connect(gw)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-Id: req-slow-body\r\n"
              b"Content-Length: 10\r\n\r\n{")
    _, slow, _ = answer(read_all(s))
    assert slow["x-request-id"] == "req-slow-body"   # the app had named it: the same id
    lines: dict[str, dict[str, Any]] = {}

    def logged() -> bool:
        lines.update({line["request_id"]: line for line in gw.lines()})
        return too_large["x-request-id"] in lines and "req-slow-body" in lines

    assert eventually(logged)
    first, second = lines[too_large["x-request-id"]], lines["req-slow-body"]
    assert (first["status"], first["error"], first["endpoint"]) == (431, "request_header_fields_too_large", "other")
    assert (second["status"], second["error"], second["endpoint"]) == (408, "request_timeout", "chat")
    assert first["level"] == second["level"] == "warning"
    assert [line["request_id"] for line in gw.lines()].count("req-slow-body") == 1   # the app logged none of its own


def test_a_request_that_is_not_http_gets_an_openai_shaped_400(gw):
    s = connect(gw)
    s.sendall(b"GET / HTTP/1.1\r\nHost x\r\n\r\n")
    assert_refused(read_all(s), 400, "invalid_http")


# ---- open mode ----------------------------------------------------------------------------------

def serve_argv(path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), *args]


def test_serve_refuses_an_open_gateway_on_an_address_others_can_reach(tmp_path, upstream):
    path = tmp_path / "gateway.yaml"
    text = yaml.safe_dump(base_config(upstream, server={"host": "0.0.0.0", "port": 0}), sort_keys=False)
    path.write_text(text)
    line = text.splitlines().index("  host: 0.0.0.0") + 1
    refused = subprocess.run(serve_argv(path), capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"{path}:{line}: ") and "server.allow_open: true" in refused.stderr
    assert "auth.keys" in refused.stderr and "0.0.0.0" in refused.stderr

    path.write_text(yaml.safe_dump(base_config(upstream)))   # loopback in the file, 0.0.0.0 on the command line
    refused = subprocess.run(serve_argv(path, "--host", "0.0.0.0"), capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and refused.stderr.startswith("--host: ")


def test_allow_open_serves_open_on_purpose_and_says_so(tmp_path, upstream):
    gw = Serving(tmp_path, base_config(upstream, server={"host": "0.0.0.0", "allow_open": True}))
    try:
        assert httpx.get(gw.url + "/healthz").status_code == 200
    finally:
        gw.kill()
    assert "warning: auth.keys is empty: the gateway is open" in gw.stderr()


def test_the_open_warning_names_the_providers_that_receive_the_clients_tokens(tmp_path, upstream):
    config = base_config(upstream)
    config["providers"]["passthrough"] = {"base_url": upstream.url}   # no api_key
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    [warning] = open_gateway_warnings(load_config(path).config, "127.0.0.1", 8080)
    assert "anyone who can reach 127.0.0.1:8080" in warning
    assert "calls to fake are made with the provider's api_key" in warning
    assert "passthrough (no api_key) receive each client's own Authorization header" in warning
    config["auth"] = {"keys": [{"name": "team", "key": "gw-secret"}]}
    path.write_text(yaml.safe_dump(config))
    assert open_gateway_warnings(load_config(path).config, "0.0.0.0", 8080) == []
    assert open_gateway_refusal(load_config(path), "0.0.0.0", False) is None


@pytest.mark.parametrize("name", ["config/gateway.yaml", "config/examples/demo.yaml", "config/examples/replicas.yaml",
                                  "config/examples/cascade.yaml", "config/examples/cost.yaml",
                                  "config/examples/weighted.yaml", "config/examples/providers.yaml"])
def test_the_shipped_configs_start_as_their_hosts_say(name, monkeypatch):
    """`make serve` and `make demo` on loopback; the replicas (compose, Kubernetes) on 0.0.0.0 behind
    their load balancer, open on purpose."""
    for var in ("GATEWAY_HOST", "GATEWAY_ALLOW_OPEN"):
        monkeypatch.delenv(var, raising=False)
    loaded = load_config(ROOT / name)
    host = loaded.config.server.host
    assert open_gateway_refusal(loaded, host, False) is None
    if name == "config/gateway.yaml":   # the image's GATEWAY_HOST=0.0.0.0: refused until keys or GATEWAY_ALLOW_OPEN
        monkeypatch.setenv("GATEWAY_HOST", "0.0.0.0")
        loaded = load_config(ROOT / name)
        assert "server.allow_open" in open_gateway_refusal(loaded, "0.0.0.0", False)
        monkeypatch.setenv("GATEWAY_ALLOW_OPEN", "true")
        assert open_gateway_refusal(load_config(ROOT / name), "0.0.0.0", False) is None
