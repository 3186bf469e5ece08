"""Real parts over loopback: fake upstreams, the gateway under uvicorn, the openai SDK as client."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import openai
import pytest
import uvicorn
import yaml

from gateway.app import create_app
from gateway.config import load_config

from .fake_upstream import FakeUpstream, free_port


@dataclass
class RunningGateway:
    url: str           # http://127.0.0.1:PORT
    app: Any
    server: uvicorn.Server
    thread: threading.Thread
    config_path: Path

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def client(self, api_key: str = "sk-client", **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, **kw)

    def async_client(self, api_key: str = "sk-client", **kw: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, **kw)

    def http(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)

    @property
    def runtime(self):
        return self.app.state.runtime

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def serve_app(app: Any, port: int | None = None) -> tuple[uvicorn.Server, threading.Thread, int]:
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="asyncio", http="httptools",
                            lifespan="on", access_log=False, log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name=f"gateway-{port}")
    thread.start()
    deadline = time.monotonic() + 60  # a semantic cache loads its embedding model at startup
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.01)
    return server, thread, port


def base_config(upstream: FakeUpstream, **overrides: Any) -> dict[str, Any]:
    """One provider on the fake upstream, two priced chat models, one embedding model, a route."""
    cfg: dict[str, Any] = {
        "providers": {"fake": {"base_url": upstream.url, "api_key": "sk-provider-secret",
                               "max_concurrency": 16, "max_queue": 64, "queue_timeout_s": 5, "timeout_s": 10}},
        "models": {
            "gpt-4o-mini": {"provider": "fake", "input_per_1m": 0.15, "output_per_1m": 0.60},
            "gpt-4o": {"provider": "fake", "input_per_1m": 2.50, "output_per_1m": 10.0},
            "text-embedding-3-small": {"provider": "fake", "input_per_1m": 0.02},
        },
        "routes": {"support": {"targets": ["gpt-4o-mini"]}},
    }
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream(name="fake").start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _fresh_upstream(request: pytest.FixtureRequest) -> None:
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").reset()


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., RunningGateway]]:
    running: list[RunningGateway] = []

    def start(config: dict[str, Any] | str) -> RunningGateway:
        path = tmp_path / f"gateway-{len(running)}.yaml"
        path.write_text(config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False))
        app = create_app(load_config(path))
        server, thread, port = serve_app(app)
        gw = RunningGateway(f"http://127.0.0.1:{port}", app, server, thread, path)
        running.append(gw)
        return gw

    yield start
    for gw in running:
        gw.stop()


@pytest.fixture
def gateway(start_gateway, upstream) -> RunningGateway:
    return start_gateway(base_config(upstream))


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `check` until it is true or `timeout` passes (for effects that land just after a reply)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


class RedisServer:
    """A real redis-server on a free port, which a test may stop and start again."""

    def __init__(self, tmp_dir: Path, *extra: str, config_file: Path | None = None):
        """`extra`: more redis-server options; `config_file`: read first (a Sentinel's)."""
        import shutil

        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
        self.binary = binary
        self.port = free_port()
        self.dir = tmp_dir
        self.extra = extra
        self.config_file = config_file
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        import socket
        import subprocess

        first = [str(self.config_file)] if self.config_file is not None else []
        self.proc = subprocess.Popen(
            [self.binary, *first, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def spawn_gateway_serve(config_path: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    """`gateway serve` as a real process on a free port, returned once /readyz says ready."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path), "--port", str(port),
         "--log-level", "warning", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return proc, port
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"gateway serve exited: {proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("gateway serve did not become ready")
        time.sleep(0.05)
