"""SIGTERM to a real `gateway serve`: it stops accepting, lets what is in flight finish for
`server.shutdown_grace_s`, then ends each stream still running with an SSE error event (and each
request still waiting with a 503), closes idle and slow connections at once, and exits 0."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import yaml

from .conftest import base_config
from .fake_upstream import FakeUpstream, free_port

LONG_REPLY = " ".join(f"word{i}" for i in range(200))


class Serving:
    """`gateway serve` as a process, its stdout (the request log) and stderr in files."""

    def __init__(self, tmp: Path, config: dict[str, Any], *args: str):
        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / "gateway.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout_path, self.stderr_path = tmp / "stdout.log", tmp / "stderr.log"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path),
                                          "--port", str(self.port), *args], stdout=out, stderr=err)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"gateway did not start: {self.stderr_path.read_text()}")
            time.sleep(0.05)

    def terminate(self) -> float:
        """SIGTERM; the monotonic time it was sent."""
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        return sent

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.stdout_path.read_text().splitlines() if line.startswith("{")]

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def serve(tmp_path: Path):
    started: list[Serving] = []

    def start(config: dict[str, Any], *args: str) -> Serving:
        started.append(Serving(tmp_path / str(len(started)), config, *args))
        return started[-1]

    yield start
    for s in started:
        s.kill()


def config(upstream: FakeUpstream, **server: Any) -> dict[str, Any]:
    return base_config(upstream, server=server)


def stream_in_thread(url: str, body: dict[str, Any], request_id: str) -> tuple[threading.Thread, dict[str, Any]]:
    """A streamed request read to its end in a thread: `got` holds its events, its end time, any error."""
    got: dict[str, Any] = {"events": [], "first": threading.Event()}

    def read() -> None:
        try:
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60,
                              headers={"authorization": "Bearer sk-client", "x-request-id": request_id}) as r:
                got["status"] = r.status_code
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        got["events"].append(line[6:])
                        got["first"].set()
        except httpx.HTTPError as exc:  # a connection cut mid-body (no end of the chunked body)
            got["error"] = exc
        finally:
            got["ended"] = time.monotonic()
            got["first"].set()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, got


def chat(stream: bool, **fake: Any) -> dict[str, Any]:
    return {"model": "support", "stream": stream, "messages": [{"role": "user", "content": "tell me everything"}],
            "fake": fake}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stream_still_running_when_the_grace_period_ends_gets_an_error_event_and_its_end(serve, upstream, workers):
    gw = serve(config(upstream, shutdown_grace_s=1), "--workers", str(workers))
    thread, got = stream_in_thread(gw.url, chat(True, reply=LONG_REPLY, chunk_delay_s=0.1), "req-long")
    assert got["first"].wait(10) and got["events"], got
    sent = gw.terminate()
    thread.join(15)
    assert gw.wait(15) == 0, gw.stderr()

    assert "error" not in got, got["error"]          # the body ended properly (no bare cut)
    assert got["status"] == 200
    events = got["events"]
    assert len(events) > 2 and "[DONE]" not in events   # some of the answer came, not all of it
    error = orjson.loads(events[-1])["error"]
    assert error["type"] == "server_error" and error["code"] == "shutting_down" and "shutting down" in error["message"]
    assert 1.0 <= got["ended"] - sent < 4.0           # at the end of the grace period, not before
    assert "Traceback" not in gw.stderr()


def test_the_sdk_raises_the_error_event_of_a_stream_ended_at_shutdown(serve, upstream):
    gw = serve(config(upstream, shutdown_grace_s=0.5))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-client", max_retries=0)
    stream = client.chat.completions.create(model="support", stream=True, messages=[{"role": "user", "content": "hi"}],
                                            extra_body={"fake": {"reply": LONG_REPLY, "chunk_delay_s": 0.1}})
    texts = [next(iter(stream)).choices[0].delta.content]
    gw.terminate()
    with pytest.raises(openai.APIError, match="shutting down"):
        for chunk in stream:
            texts.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert gw.wait(15) == 0


def test_the_log_line_of_a_stream_ended_at_shutdown_says_so(serve, upstream):
    gw = serve(config(upstream, shutdown_grace_s=0.5))
    thread, got = stream_in_thread(gw.url, chat(True, reply=LONG_REPLY, chunk_delay_s=0.1), "req-cut")
    assert got["first"].wait(10)
    gw.terminate()
    thread.join(15)
    assert gw.wait(15) == 0
    line = next(line for line in gw.lines() if line.get("request_id") == "req-cut")
    assert line["error"] == "shutdown" and line["level"] != "info"   # not a clean 200
    assert not line.get("client_left")


def test_a_stream_that_ends_within_the_grace_period_ends_as_usual(serve, upstream):
    gw = serve(config(upstream, shutdown_grace_s=10))
    reply = " ".join(f"w{i}" for i in range(10))
    thread, got = stream_in_thread(gw.url, chat(True, reply=reply, chunk_delay_s=0.1), "req-short")
    assert got["first"].wait(10)
    sent = gw.terminate()
    thread.join(15)
    assert gw.wait(15) == 0
    assert time.monotonic() - sent < 5   # gone once the stream was done, not at the end of the grace period
    assert "error" not in got and got["events"][-1] == "[DONE]"
    assert not any('"error"' in e for e in got["events"])
    line = next(line for line in gw.lines() if line.get("request_id") == "req-short")
    assert line["status"] == 200 and line["error"] is None


def test_a_request_still_waiting_for_its_answer_when_the_grace_period_ends_gets_503(serve, upstream):
    gw = serve(config(upstream, shutdown_grace_s=1))
    answer: dict[str, Any] = {}

    def ask() -> None:
        answer["response"] = httpx.post(gw.url + "/v1/chat/completions", json=chat(False, latency_s=4), timeout=30,
                                        headers={"x-request-id": "req-waiting"})

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while upstream.in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    sent = gw.terminate()
    thread.join(15)
    assert gw.wait(15) == 0, gw.stderr()
    assert time.monotonic() - sent < 5
    r = answer["response"]
    assert r.status_code == 503 and r.headers["x-request-id"] == "req-waiting"
    assert r.json()["error"]["code"] == "shutting_down" and r.json()["error"]["type"] == "server_error"
    assert "Traceback" not in gw.stderr()
    [line] = [line for line in gw.lines() if line.get("request_id") == "req-waiting"]   # once, as answered
    assert (line["status"], line["error"], line["endpoint"]) == (503, "shutting_down", "chat")


def test_idle_and_slow_connections_do_not_hold_the_shutdown(serve, upstream):
    gw = serve(config(upstream))   # the default grace period: 30 s
    connect = lambda: socket.create_connection(("127.0.0.1", gw.port), timeout=10)  # noqa: E731
    slow_headers = [connect() for _ in range(3)]
    for s in slow_headers:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    slow_bodies = [connect() for _ in range(3)]
    for s in slow_bodies:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"model\": ")
    silent = connect()
    idle = httpx.Client(base_url=gw.url)
    assert idle.get("/healthz").status_code == 200      # a keep-alive connection, now idle
    time.sleep(0.3)

    sent = gw.terminate()
    assert gw.wait(15) == 0, gw.stderr()
    assert time.monotonic() - sent < 3, "slow clients held the shutdown"
    for s in slow_bodies:   # a request still arriving: told to go elsewhere
        head, _, body = read_all(s).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ") and orjson.loads(body)["error"]["code"] == "shutting_down"
    for s in [*slow_headers, silent]:
        assert read_all(s) == b""
    idle.close()
    assert "Traceback" not in gw.stderr()
    assert [line["status"] for line in gw.lines() if line.get("error") == "shutting_down"] == [503] * 3


def test_a_connection_accepted_as_the_shutdown_begins_gets_its_request_served(serve, upstream):
    # What a rolling restart does to a client: it connected, the worker stopped accepting, and its
    # request came a moment later. It is served, and the connection then closed.
    gw = serve(config(upstream))
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    time.sleep(0.3)   # accepted by now
    gw.terminate()
    time.sleep(0.1)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, _ = read_all(s).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" in head.lower()
    assert gw.wait(15) == 0, gw.stderr()


def read_all(s: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    return data
