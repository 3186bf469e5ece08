"""Fault drills: providers misbehaving under load (16-32 requests in flight, a few seconds each).

Every drill runs the same fault twice: on a route with a healthy fallback (every client is served
by the fallback, and the circuit keeps the failing target from being asked more than it must) and
on a route whose only target fails (the client gets an OpenAI-shaped error with the right status,
then 503 `targets_unavailable` once the circuit opens). Requests are cacheable (temperature 0),
so each drill also checks that no error was stored, and every one ends with no provider slot
still taken.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from .conftest import eventually
from .fake_upstream import FakeUpstream, free_port
from .routing_fakes import fakes, fakes_started, routing_config  # noqa: F401
from .test_metrics import settled

OPENS = 3          # failures_to_open in every drill
IN_FLIGHT = 16
N = 96
ROUTES = {"support": {"targets": ["cheap-model", "mid-model"]}, "solo": {"targets": ["cheap-model"]}}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


def bodies(route: str, n: int, tag: str, **extra: Any) -> list[dict[str, Any]]:
    """n cacheable requests, each with its own question (so none is served by another's answer)."""
    return [{"model": route, "temperature": 0, "messages": [{"role": "user", "content": f"{tag} question {i}"}],
             **extra} for i in range(n)]


async def load(url: str, requests: list[dict[str, Any]], concurrency: int = IN_FLIGHT) -> list[Reply]:
    replies: list[Reply] = []
    pending = list(reversed(requests))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def worker() -> None:
            while pending:
                body = pending.pop()
                async with session.post(url + "/v1/chat/completions", json=body) as r:
                    raw = await r.read()
                    kind = r.headers.get("content-type", "")
                    data = orjson.loads(raw) if kind.startswith("application/json") else raw.decode()
                    replies.append(Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, data))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return replies


def drill(gw, requests: list[dict[str, Any]], concurrency: int = IN_FLIGHT) -> list[Reply]:
    return asyncio.run(load(gw.url, requests, concurrency))


def openai_error(reply: Reply) -> dict[str, Any]:
    """The error object of an OpenAI-shaped error answer."""
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    assert set(reply.body) == {"error"}, reply.body
    error = reply.body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    return error


def config(fakes: dict[str, FakeUpstream], cooldown_s: float = 30.0, **providers: dict[str, Any]) -> dict[str, Any]:
    cfg = routing_config(fakes, ROUTES, health={"failures_to_open": OPENS, "window_s": 10, "cooldown_s": cooldown_s})
    for name, settings in providers.items():
        cfg["providers"][name].update(settings)
    return cfg


def settle(gw) -> None:
    """Every request observed and every provider slot given back."""
    assert eventually(lambda: all(p.limiter.in_flight == 0 for p in gw.runtime.providers.values()))
    for name, provider in gw.runtime.providers.items():
        assert provider.limiter.in_flight == 0, name


def check_fallback(gw, fakes, replies: list[Reply], reason: str, tried: int | None = None) -> None:
    """Everyone served by mid; cheap tried only until its circuit opened (and by the requests
    already under way then); every answer stored, under the route's key. `tried`: the attempts on
    cheap, when its fake is not what answered them."""
    tried = fakes["cheap"].calls if tried is None else tried
    assert [r.status for r in replies] == [200] * len(replies)
    assert {r.headers["x-gateway-target"] for r in replies} == {"mid-model"}
    assert OPENS <= tried <= OPENS + IN_FLIGHT, tried
    assert fakes["mid"].calls == len(replies)
    assert gw.runtime.health.state("cheap-model") == "open"
    m = settled(gw, len(replies))
    assert m.value("gateway_fallbacks_total", route="support", reason=reason) == tried
    assert m.value("gateway_fallbacks_total", route="support", reason="circuit_open") == len(replies) - tried
    assert m.value("gateway_requests_total", route="support", status="2xx", provider="mid") == len(replies)
    assert m.value("gateway_target_healthy", target="cheap-model") == 0
    assert len(gw.runtime.cache.store) == len(replies)
    settle(gw)


def check_solo(gw, replies: list[Reply], status: int, code: str | None) -> list[Reply]:
    """The failing target's own error until its circuit opens, then 503 targets_unavailable;
    nothing stored. Returns the failed replies (not the 503s)."""
    paused = [r for r in replies if r.status == 503 and openai_error(r)["code"] == "targets_unavailable"]
    failed = [r for r in replies if r.status == status and r not in paused]
    assert len(failed) + len(paused) == len(replies), [r.status for r in replies]
    assert OPENS <= len(failed) <= OPENS + IN_FLIGHT, len(failed)
    for r in failed:
        assert openai_error(r)["code"] == code
    for r in paused:
        assert int(r.headers["retry-after"]) >= 1
    settled(gw, len(replies))   # each request observed: whatever it stored is in by now
    assert len(gw.runtime.cache.store) == 0
    return failed


# ---- the drills -----------------------------------------------------------------------------------

def test_drill_upstream_slower_than_its_timeout(start_gateway, fakes):
    gw = start_gateway(config(fakes, cheap={"timeout_s": 0.3}))
    fakes["cheap"].set(latency_s=1.0)
    started = time.monotonic()
    check_fallback(gw, fakes, drill(gw, bodies("support", N, "slow")), "timeout")
    assert time.monotonic() - started < 3   # the timeouts bound the wait: ~0.3 s, not the provider's 1 s

    gw = start_gateway(config(fakes, cheap={"timeout_s": 0.3}))
    fakes["cheap"].reset()
    fakes["cheap"].set(latency_s=1.0)
    failed = check_solo(gw, drill(gw, bodies("solo", N, "slow")), 504, "upstream_timeout")
    assert "did not answer within 0.3s" in failed[0].body["error"]["message"]
    m = settled(gw, N)
    assert m.value("gateway_upstream_errors_total", provider="cheap", kind="timeout") == len(failed)
    assert m.value("gateway_requests_total", route="solo", status="5xx") == N
    settle(gw)


def test_drill_a_429_storm_with_retry_after(start_gateway, fakes):
    gw = start_gateway(config(fakes))
    fakes["cheap"].set(error_status=429, retry_after="1")
    check_fallback(gw, fakes, drill(gw, bodies("support", N, "storm")), "429")

    gw = start_gateway(config(fakes))
    fakes["cheap"].reset()
    fakes["cheap"].set(error_status=429, retry_after="1")
    replies = drill(gw, bodies("solo", N, "storm"), 32)
    failed = [r for r in replies if r.status == 429]
    assert OPENS <= len(failed) <= OPENS + 32
    for r in failed:   # the provider's own answer, passed through with its Retry-After
        assert openai_error(r)["message"] == "fake upstream error 429" and r.headers["retry-after"] == "1"
    paused = [r for r in replies if r.status == 503]
    assert len(paused) == N - len(failed)
    assert all(openai_error(r)["code"] == "targets_unavailable" and r.headers["retry-after"] == "1" for r in paused)
    settled(gw, N)
    assert len(gw.runtime.cache.store) == 0
    # The storm ends; the circuit tries again after the provider's second, not after cooldown_s:
    # one trial, and once it has succeeded, everyone.
    fakes["cheap"].set(error_status=0)
    time.sleep(1.1)
    assert [r.status for r in drill(gw, bodies("solo", 1, "after"), 1)] == [200]
    again = drill(gw, bodies("solo", 32, "storm"), 32)
    assert [r.status for r in again] == [200] * 32
    assert gw.runtime.health.state("cheap-model") == "closed"
    assert eventually(lambda: len(gw.runtime.cache.store) == 33)
    settle(gw)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_drill_5xx(start_gateway, fakes, status):
    gw = start_gateway(config(fakes))
    fakes["cheap"].set(error_status=status)
    check_fallback(gw, fakes, drill(gw, bodies("support", N, "5xx")), str(status))

    gw = start_gateway(config(fakes))
    fakes["cheap"].reset()
    fakes["cheap"].set(error_status=status)
    failed = check_solo(gw, drill(gw, bodies("solo", N, "5xx")), status, None)
    assert failed[0].body["error"]["message"] == f"fake upstream error {status}"   # the provider's body
    assert settled(gw, N).value("gateway_upstream_errors_total", provider="cheap", kind="http_5xx") == len(failed)
    settle(gw)


def test_drill_invalid_json(start_gateway, fakes):
    gw = start_gateway(config(fakes))
    fakes["cheap"].set(invalid_json=True)
    check_fallback(gw, fakes, drill(gw, bodies("support", N, "garbage")), "invalid")

    gw = start_gateway(config(fakes, cooldown_s=1.0))
    fakes["cheap"].reset()
    fakes["cheap"].set(invalid_json=True)
    asked = bodies("solo", N, "garbage")
    failed = check_solo(gw, drill(gw, asked), 502, "upstream_error")
    assert "invalid response" in failed[0].body["error"]["message"]
    # Fixed: the same questions are asked upstream again (nothing of the garbage was kept).
    fakes["cheap"].set(invalid_json=False)
    time.sleep(1.1)
    again = drill(gw, asked[:8], 1)
    assert [(r.status, r.headers["x-gateway-cache"]) for r in again] == [(200, "miss")] * 8
    settle(gw)


def test_drill_a_stream_breaks_midway(start_gateway, fakes):
    gw = start_gateway(config(fakes, cooldown_s=1.0))
    fakes["cheap"].set(broken_after=2)
    asked = bodies("solo", N, "stream", stream=True)
    replies = drill(gw, asked)
    broken = [r for r in replies if r.status == 200]
    assert OPENS <= len(broken) <= OPENS + IN_FLIGHT
    assert all(r.body.rstrip().endswith("}") and '"upstream_stream_error"' in r.body for r in broken)
    paused = [r for r in replies if r.status == 503]
    assert len(paused) == N - len(broken) and all(openai_error(r)["code"] == "targets_unavailable" for r in paused)
    settled(gw, N)
    assert len(gw.runtime.cache.store) == 0   # a truncated answer is never stored
    fakes["cheap"].set(broken_after=-1)
    time.sleep(1.1)
    again = drill(gw, asked[:4], 1)
    assert [r.status for r in again] == [200] * 4 and all(r.body.rstrip().endswith("[DONE]") for r in again)
    assert eventually(lambda: len(gw.runtime.cache.store) == 4)   # stored once the client has its answer
    m = settled(gw, N + 4)
    assert m.value("gateway_requests_total", route="solo", status="5xx", cache="miss") == len(broken) + len(paused)
    assert m.value("gateway_upstream_errors_total", provider="cheap", kind="broken_stream") == len(broken)
    settle(gw)


def test_drill_connection_refused_then_back(start_gateway, fakes):
    port = free_port()   # nothing listens here yet
    cheap = {"base_url": f"http://127.0.0.1:{port}/v1", "connect_timeout_s": 1}
    gw = start_gateway(config(fakes, cheap=cheap))
    check_fallback(gw, fakes, drill(gw, bodies("support", N, "refused")), "connect",
                   tried=int(settled(gw, N).value("gateway_upstream_errors_total", provider="cheap", kind="connect")))

    gw = start_gateway(config(fakes, cooldown_s=1.0, cheap=cheap))
    failed = check_solo(gw, drill(gw, bodies("solo", N, "refused")), 502, "upstream_error")
    assert "could not be reached" in failed[0].body["error"]["message"]

    back = FakeUpstream(port=port, name="back").start()   # the provider is back, on the same address
    try:
        time.sleep(1.1)
        assert [r.status for r in drill(gw, bodies("solo", 1, "back"), 1)] == [200]   # the trial
        assert gw.runtime.health.state("cheap-model") == "closed"
        again = drill(gw, bodies("solo", 32, "again"), 32)
        assert [r.status for r in again] == [200] * 32 and back.calls == 33
        settle(gw)
    finally:
        back.stop()
