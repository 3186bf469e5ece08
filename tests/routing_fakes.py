"""Shared by the routing, reload and explain tests: three fake upstreams as three providers with
different prices, a config builder around them, and a tap on the finished request records."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import aiohttp
import pytest

from .fake_upstream import FakeUpstream, free_port

MESSAGES = [{"role": "user", "content": "How long does a refund take?"}]

# name -> (input, output) USD per 1M tokens: each provider serves one model, cheapest first.
PRICES = {"cheap": (0.10, 0.20), "mid": (0.50, 1.50), "strong": (5.00, 15.00)}


@pytest.fixture(scope="module")
def fakes_started() -> Iterator[dict[str, FakeUpstream]]:
    started = {name: FakeUpstream(name=name).start() for name in PRICES}
    yield started
    for fake in started.values():
        fake.stop()


@pytest.fixture
def fakes(fakes_started: dict[str, FakeUpstream]) -> dict[str, FakeUpstream]:
    for fake in fakes_started.values():
        fake.reset()
    return fakes_started


def routing_config(fakes: dict[str, FakeUpstream], routes: dict[str, Any], **top: Any) -> dict[str, Any]:
    """Providers cheap, mid, strong (models cheap-model, mid-model, strong-model), plus `routes`."""
    cfg: dict[str, Any] = {
        "providers": {
            name: {"base_url": fake.url, "api_key": f"sk-{name}", "max_concurrency": 64, "max_queue": 512,
                   "queue_timeout_s": 5, "timeout_s": 5, "connect_timeout_s": 1}
            for name, fake in fakes.items()
        },
        "models": {
            f"{name}-model": {"provider": name, "input_per_1m": p_in, "output_per_1m": p_out}
            for name, (p_in, p_out) in PRICES.items()
        },
        "routes": routes,
    }
    cfg.update(top)
    return cfg


def dead_provider() -> dict[str, Any]:
    """A provider nothing listens for: connection refused."""
    return {"base_url": f"http://127.0.0.1:{free_port()}/v1", "connect_timeout_s": 1, "timeout_s": 2}


class Tap:
    """Keeps every finished request record, and passes it on to the gateway's own observer."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.records: list[Any] = []
        self.reloads: list[str] = []

    def finish(self, record: Any, runtime: Any) -> None:
        self.records.append(record)
        self.inner.finish(record, runtime)

    def config_reloaded(self, path: str, trigger: str, ok: bool, fields: dict[str, Any]) -> None:
        self.reloads.append("success" if ok else "failure")
        self.inner.config_reloaded(path, trigger, ok, fields)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def tap(gw: Any) -> Tap:
    observer = Tap(gw.app.state.observer)
    gw.app.state.observer = observer
    return observer


def chat(gw: Any, model: str, messages: list[dict[str, Any]] | None = None, **kw: Any):
    """One chat completion through the SDK; returns (raw response, parsed completion)."""
    client = gw.__dict__.get("_sdk")
    if client is None:  # one client per gateway: making one costs more than a request
        client = gw.__dict__["_sdk"] = gw.client()
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages or MESSAGES, **kw)
    return raw, raw.parse()


async def burst(url: str, bodies: list[dict[str, Any]], concurrency: int = 32,
                headers: dict[str, str] | None = None) -> list[tuple[int, str | None]]:
    """POST each body to /v1/chat/completions, `concurrency` at a time: (status, x-gateway-target)."""
    results: list[tuple[int, str | None]] = [(0, None)] * len(bodies)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(bodies)):
        queue.put_nowait(i)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                async with session.post(url + "/v1/chat/completions", json=bodies[i], headers=headers) as r:
                    await r.read()
                    results[i] = (r.status, r.headers.get("x-gateway-target"))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results
