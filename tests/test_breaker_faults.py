"""The circuit breaker against the faults it exists for: streams that break after they began, and
a provider that says in `Retry-After` when to come back."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass
from email.utils import formatdate

import aiohttp
import httpx
import orjson
import pytest

from gateway.config import HealthConfig
from gateway.logs import LineWriter
from gateway.routing.health import Health
from gateway.routing.retry import parse_retry_after

from .conftest import eventually
from .routing_fakes import MESSAGES, fakes, fakes_started, routing_config  # noqa: F401
from .test_metrics import Scrape, scrape

TWO = {"support": {"targets": ["cheap-model", "mid-model"]}}
ONLY = {"support": {"targets": ["cheap-model"]}}


@dataclass
class Streamed:
    status: int
    target: str | None
    done: bool          # ended with `data: [DONE]`
    error: bool         # ended with an SSE error event


async def stream_burst(url: str, n: int, concurrency: int, model: str = "support") -> list[Streamed]:
    """`n` streamed chat completions, `concurrency` in flight, each read to its end."""
    results: list[Streamed] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    body = {"model": model, "messages": MESSAGES, "stream": True}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                async with session.post(url + "/v1/chat/completions", json=body) as r:
                    text = (await r.read()).decode()
                    last = text.rstrip().rsplit("\n", 1)[-1]
                    results.append(Streamed(r.status, r.headers.get("x-gateway-target"), last == "data: [DONE]",
                                            last.startswith('data: {"error"')))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def capture_log(gw) -> io.BytesIO:
    """The gateway's request lines from now on, into a buffer instead of stdout."""
    out = io.BytesIO()
    observer = gw.app.state.observer
    observer.log.close()
    observer.log = LineWriter(out)
    return out


def log_lines(gw, out: io.BytesIO, n: int) -> list[dict]:
    observer = gw.app.state.observer
    assert eventually(lambda: out.getvalue().count(b"\n") >= n)
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def settled(gw, requests: int) -> Scrape:
    got: list[Scrape] = []
    assert eventually(lambda: got.append(scrape(gw)) or got[-1].value("gateway_requests_total") >= requests)
    return got[-1]


# ---- a stream that breaks is a failure of its target ---------------------------------------------

@pytest.mark.parametrize("fault", [{"broken_after": 2}, {"no_done": True}], ids=["broken", "no-done"])
def test_streams_that_break_open_the_circuit_and_the_next_go_to_the_fallback(start_gateway, fakes, fault):
    opens, n, in_flight = 5, 240, 16
    gw = start_gateway(routing_config(fakes, TWO, health={"failures_to_open": opens, "window_s": 10,
                                                           "cooldown_s": 30}))
    out = capture_log(gw)
    fakes["cheap"].set(**fault)
    results = asyncio.run(stream_burst(gw.url, n, in_flight))

    assert all(r.status == 200 for r in results) and len(results) == n
    broken = [r for r in results if r.error]
    served = [r for r in results if r.done]
    assert len(broken) + len(served) == n
    assert all(r.target == "cheap-model" for r in broken) and all(r.target == "mid-model" for r in served)
    # The circuit opens on the fifth break; the streams already under way on cheap break too.
    assert opens <= len(broken) <= opens + in_flight, len(broken)
    assert fakes["cheap"].calls == len(broken) and fakes["mid"].calls == len(served)
    assert gw.runtime.health.state("cheap-model") == "open"

    m = settled(gw, n)
    assert m.value("gateway_requests_total", route="support", status="5xx") == len(broken)
    assert m.value("gateway_requests_total", route="support", provider="cheap", status="2xx") == 0
    assert m.value("gateway_requests_total", route="support", provider="mid", status="2xx") == len(served)
    assert m.value("gateway_upstream_errors_total", provider="cheap", kind="broken_stream") == len(broken)
    assert m.value("gateway_fallbacks_total", route="support", reason="circuit_open") == len(served)
    assert m.value("gateway_target_healthy", target="cheap-model") == 0

    lines = log_lines(gw, out, n)
    bad = [line for line in lines if line["target"] == "cheap-model"]
    assert len(bad) == len(broken)
    assert {(line["level"], line["status"], line["error"]) for line in bad} == {("error", 200, "broken_stream")}
    assert {line["level"] for line in lines if line["target"] == "mid-model"} == {"info"}
    for provider in ("cheap", "mid"):
        assert gw.runtime.providers[provider].limiter.in_flight == 0


def test_a_stream_that_times_out_midway_counts_against_its_target(start_gateway, fakes):
    cfg = routing_config(fakes, TWO, health={"failures_to_open": 2, "window_s": 10, "cooldown_s": 30})
    cfg["providers"]["cheap"]["timeout_s"] = 0.5
    gw = start_gateway(cfg)
    fakes["cheap"].set(chunk_delay_s=0.2)   # headers at once, then slower than the provider's timeout_s
    results = asyncio.run(stream_burst(gw.url, 8, 2))
    timed_out = [r for r in results if r.error]
    # The second timeout opens the circuit; a stream begun just before that times out too.
    assert 2 <= len(timed_out) <= 3 and {r.target for r in timed_out} == {"cheap-model"}
    assert sum(r.done and r.target == "mid-model" for r in results) == 8 - len(timed_out)
    assert gw.runtime.health.state("cheap-model") == "open"
    m = settled(gw, 8)
    assert m.value("gateway_upstream_errors_total", provider="cheap", kind="timeout") == len(timed_out)
    assert m.value("gateway_requests_total", status="5xx") == len(timed_out)


def test_a_trial_stream_that_completes_closes_the_circuit(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, TWO, health={"failures_to_open": 1, "window_s": 10,
                                                           "cooldown_s": 1}))
    fakes["cheap"].set(broken_after=1)
    assert [r.target for r in asyncio.run(stream_burst(gw.url, 2, 1))] == ["cheap-model", "mid-model"]
    assert gw.runtime.health.state("cheap-model") == "open"
    fakes["cheap"].set(broken_after=-1)
    time.sleep(1.1)
    trial = asyncio.run(stream_burst(gw.url, 1, 1))[0]
    assert (trial.target, trial.done) == ("cheap-model", True)
    assert gw.runtime.health.state("cheap-model") == "closed"


def test_a_trial_stream_whose_client_leaves_gives_the_trial_back(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, TWO, health={"failures_to_open": 1, "window_s": 10,
                                                           "cooldown_s": 2}))
    fakes["cheap"].set(broken_after=1)
    asyncio.run(stream_burst(gw.url, 1, 1))
    assert gw.runtime.health.state("cheap-model") == "open"
    fakes["cheap"].set(broken_after=-1, chunk_delay_s=0.2)
    time.sleep(2.1)

    async def leave_after_first_chunk() -> str | None:
        async with aiohttp.ClientSession() as session:
            async with session.post(gw.url + "/v1/chat/completions",
                                    json={"model": "support", "messages": MESSAGES, "stream": True}) as r:
                await r.content.readany()
                return r.headers.get("x-gateway-target")

    assert asyncio.run(leave_after_first_chunk()) == "cheap-model"   # the trial
    assert eventually(lambda: gw.runtime.providers["cheap"].limiter.in_flight == 0)
    # The stream said nothing about the target: the trial is given back, so the next request is
    # the trial again at once (a failed trial would have paused cheap for another 2 s).
    assert gw.runtime.health.state("cheap-model") == "open"
    fakes["cheap"].set(chunk_delay_s=0)
    trial = asyncio.run(stream_burst(gw.url, 1, 1))[0]
    assert (trial.target, trial.done) == ("cheap-model", True)
    assert gw.runtime.health.state("cheap-model") == "closed"


# ---- Retry-After: the provider says when to come back --------------------------------------------

def test_a_429_burst_with_retry_after_is_tried_again_when_the_provider_said(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, ONLY, health={"failures_to_open": 3, "window_s": 10,
                                                            "cooldown_s": 30}))
    fakes["cheap"].set(error_status=429, retry_after="1")
    body = {"model": "support", "messages": MESSAGES}
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        first = [http.post("/v1/chat/completions", json=body) for _ in range(3)]
        assert [r.status_code for r in first] == [429] * 3
        assert first[0].headers["retry-after"] == "1"
        paused = http.post("/v1/chat/completions", json=body)
        assert paused.status_code == 503 and paused.json()["error"]["code"] == "targets_unavailable"
        assert paused.headers["retry-after"] == "1"    # the provider's word, not cooldown_s
        assert fakes["cheap"].calls == 3
        fakes["cheap"].set(error_status=0)             # the burst is over
        time.sleep(1.5)
        again = http.post("/v1/chat/completions", json=body)
    assert again.status_code == 200 and again.headers["x-gateway-target"] == "cheap-model"
    assert fakes["cheap"].calls == 4
    assert gw.runtime.health.state("cheap-model") == "closed"


def test_a_retry_after_date_bounds_the_cooldown_too(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, ONLY, health={"failures_to_open": 1, "window_s": 10,
                                                            "cooldown_s": 30}))
    fakes["cheap"].set(error_status=503, error_times=1, retry_after=formatdate(time.time() + 2, usegmt=True))
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        body = {"model": "support", "messages": MESSAGES}
        assert http.post("/v1/chat/completions", json=body).status_code == 503
        paused = http.post("/v1/chat/completions", json=body)
        assert paused.json()["error"]["code"] == "targets_unavailable"
        assert paused.headers["retry-after"] in ("1", "2")
        assert eventually(lambda: http.post("/v1/chat/completions", json=body).status_code == 200, timeout=4)
    assert fakes["cheap"].calls == 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("value, expected", [
    ("1", 1.0), ("0", 0.0), ("2.5", 2.5), (" 7 ", 7.0),
    ("-3", None), ("nan", None), ("inf", None), ("soon", None), ("", None), (None, None),
])
def test_retry_after_values(value, expected):
    assert parse_retry_after(value) == expected


def test_retry_after_dates():
    assert parse_retry_after(formatdate(time.time() + 60, usegmt=True)) == pytest.approx(60, abs=1.5)
    assert parse_retry_after(formatdate(time.time() - 60, usegmt=True)) == 0.0   # past: now
    assert parse_retry_after("Wed, 32 Foo 2026 99:00:00 GMT") is None


def test_the_trial_comes_when_retry_after_says_bounded_by_the_cooldown():
    clock = Clock()
    health = Health(HealthConfig(failures_to_open=2, window_s=10, cooldown_s=10), ["a"], clock)
    health.failure("a", 1.0)
    health.failure("a", 1.0)      # opens; the provider said one second
    assert not health.allow("a") and health.retry_after_s(["a"]) == 1
    clock.now += 1.0
    assert health.allow("a") and health.state("a") == "half-open"
    health.failure("a", 300.0)    # the trial fails: open again, no longer than cooldown_s
    assert health.retry_after_s(["a"]) == 10
    clock.now += 9.9
    assert not health.available("a")
    clock.now += 0.1
    assert health.allow("a")
    health.failure("a")           # no Retry-After: the cooldown
    clock.now += 9.9
    assert not health.available("a")
    clock.now += 0.1
    assert health.allow("a")
    health.success("a")
    assert health.state("a") == "closed"
    health.failure("a", 1.0)
    health.failure("a", None)     # the failure that opens it did not say: the cooldown
    clock.now += 9.9
    assert not health.available("a")
