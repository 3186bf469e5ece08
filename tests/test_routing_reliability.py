"""Retries, fallbacks and the circuit breaker, against fake providers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from .conftest import eventually
from .routing_fakes import MESSAGES, chat, dead_provider, fakes, fakes_started, routing_config, tap  # noqa: F401

TWO = {"support": {"targets": ["cheap-model", "mid-model"]}}
FAST_RETRY = {"attempts": 3, "backoff_s": 0.01, "max_backoff_s": 2}


def finished(records, n: int = 1):
    assert eventually(lambda: len(records.records) == n)
    return records.records[-1]


# ---- retries --------------------------------------------------------------------------------------

def test_a_retry_waits_as_long_as_retry_after_says(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, TWO, retry=FAST_RETRY))
    records = tap(gw)
    fakes["cheap"].set(error_status=429, error_times=1, retry_after="1")
    started = time.monotonic()
    raw, _ = chat(gw, "support")
    elapsed = time.monotonic() - started
    assert raw.headers["x-gateway-target"] == "cheap-model"  # retried, not fallen back
    assert fakes["cheap"].calls == 2 and fakes["mid"].calls == 0
    assert 1.0 <= elapsed < 1.8, elapsed
    record = finished(records)
    assert record.retries == 1 and record.fallbacks == []
    assert record.upstream_errors == [("cheap", "http_429")]


def test_a_retry_after_longer_than_max_backoff_falls_back_at_once(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, TWO, retry={**FAST_RETRY, "max_backoff_s": 0.5}))
    records = tap(gw)
    fakes["cheap"].set(error_status=429, retry_after="30")
    started = time.monotonic()
    raw, _ = chat(gw, "support")
    assert time.monotonic() - started < 0.5
    assert raw.headers["x-gateway-target"] == "mid-model" and fakes["cheap"].calls == 1
    record = finished(records)
    assert record.retries == 0 and record.fallbacks == ["429"]


def test_backoff_grows_between_retries(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, TWO, retry={"attempts": 3, "backoff_s": 0.1, "max_backoff_s": 2}))
    records = tap(gw)
    fakes["cheap"].set(error_status=502, error_times=2)
    started = time.monotonic()
    raw, _ = chat(gw, "support")
    # 0.1 then 0.2 (each plus up to 0.1 of jitter)
    assert 0.3 <= time.monotonic() - started < 1.0
    assert raw.headers["x-gateway-target"] == "cheap-model" and fakes["cheap"].calls == 3
    assert finished(records).retries == 2


def test_retries_run_out_then_the_next_target_answers(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, TWO, retry=FAST_RETRY))
    records = tap(gw)
    fakes["cheap"].set(error_status=500)
    raw, _ = chat(gw, "support")
    assert raw.headers["x-gateway-target"] == "mid-model"
    assert fakes["cheap"].calls == 3
    record = finished(records)
    assert record.retries == 2 and record.fallbacks == ["500"]
    assert record.upstream_errors == [("cheap", "http_5xx")] * 3


def test_a_400_is_neither_retried_nor_fallen_back_on(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, TWO, retry=FAST_RETRY))
    fakes["cheap"].set(error_status=400)
    with pytest.raises(openai.BadRequestError) as err:
        chat(gw, "support")
    assert "fake upstream error 400" in err.value.message
    assert (fakes["cheap"].calls, fakes["mid"].calls) == (1, 0)


# ---- fallbacks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("failure", ["500", "timeout", "connect"])
def test_fallback_to_the_next_target(start_gateway, fakes, failure):
    cfg = routing_config(fakes, TWO)
    if failure == "500":
        fakes["cheap"].set(error_status=500)
    elif failure == "timeout":
        cfg["providers"]["cheap"]["timeout_s"] = 0.3
        fakes["cheap"].set(latency_s=1.0)
    else:
        cfg["providers"]["cheap"] = dead_provider()
    gw = start_gateway(cfg)
    records = tap(gw)
    raw, answer = chat(gw, "support")
    assert raw.headers["x-gateway-route"] == "support"
    assert raw.headers["x-gateway-target"] == "mid-model"
    assert answer.choices[0].message.content.startswith("Echo:")
    record = finished(records)
    assert record.fallbacks == [failure]
    assert record.model == "mid-model" and record.provider == "mid"


def test_the_last_targets_error_reaches_the_client(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, TWO))
    fakes["cheap"].set(error_status=500)
    fakes["mid"].set(error_status=503, retry_after="7")
    with httpx.Client(base_url=gw.url) as http:
        r = http.post("/v1/chat/completions", json={"model": "support", "messages": MESSAGES})
    assert r.status_code == 503 and r.headers["retry-after"] == "7"


def test_a_stream_that_breaks_after_its_first_byte_ends_with_an_error_event(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, TWO, retry=FAST_RETRY))
    fakes["cheap"].set(broken_after=2)
    stream = gw.client().chat.completions.create(model="support", messages=MESSAGES, stream=True)
    got = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "Echo: How"  # what was sent stays sent; no retry, no fallback after it
    assert (fakes["cheap"].calls, fakes["mid"].calls) == (1, 0)
    with httpx.Client(base_url=gw.url) as http:
        r = http.post("/v1/chat/completions", json={"model": "support", "messages": MESSAGES, "stream": True})
    assert r.status_code == 200 and r.text.rstrip().splitlines()[-1].startswith('data: {"error"')


def test_a_stream_that_fails_before_its_first_byte_falls_back(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, TWO))
    fakes["cheap"].set(error_status=502)
    stream = gw.client().chat.completions.create(model="support", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: How long does a refund take?"
    assert fakes["mid"].calls == 1


# ---- circuit breaker ------------------------------------------------------------------------------

HEALTH = {"failures_to_open": 3, "window_s": 10, "cooldown_s": 0.5}


def test_circuit_opens_half_opens_and_closes(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, TWO, health=HEALTH))
    records = tap(gw)
    fakes["cheap"].set(error_status=500)
    for _ in range(3):
        assert chat(gw, "support")[0].headers["x-gateway-target"] == "mid-model"
    assert fakes["cheap"].calls == 3
    assert gw.runtime.health.snapshot()["cheap-model"] is False  # open after 3 failures

    assert chat(gw, "support")[0].headers["x-gateway-target"] == "mid-model"
    assert fakes["cheap"].calls == 3  # skipped while open
    assert finished(records, 4).fallbacks == ["circuit_open"]

    time.sleep(0.6)  # cooldown: the next request is the one trial, and it fails: open again
    chat(gw, "support")
    assert fakes["cheap"].calls == 4
    chat(gw, "support")
    assert fakes["cheap"].calls == 4 and gw.runtime.health.snapshot()["cheap-model"] is False

    time.sleep(0.6)
    fakes["cheap"].set(error_status=0)  # healthy again: the trial succeeds and closes the circuit
    assert chat(gw, "support")[0].headers["x-gateway-target"] == "cheap-model"
    assert gw.runtime.health.snapshot() == {"cheap-model": True, "mid-model": True, "strong-model": True}
    assert chat(gw, "support")[0].headers["x-gateway-target"] == "cheap-model"


class Clock:
    """The breaker's clock, moved by hand: time passes only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_spread_wider_than_the_window_do_not_open(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, TWO, health={**HEALTH, "window_s": 0.2}))
    clock = gw.runtime.health.clock = Clock()
    fakes["cheap"].set(error_status=500)
    for _ in range(3):
        chat(gw, "support")
        clock.now += 0.25
    assert gw.runtime.health.snapshot()["cheap-model"] is True
    for _ in range(3):  # the same three failures inside the window do open it
        chat(gw, "support")
        clock.now += 0.05
    assert gw.runtime.health.snapshot()["cheap-model"] is False
    assert chat(gw, "support")[0].headers["x-gateway-target"] == "mid-model"
    assert fakes["cheap"].calls == 6


def test_a_success_resets_the_count(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, TWO, health=HEALTH))
    gw.runtime.health.clock = Clock()   # stopped: every failure falls inside the window
    for _ in range(3):
        fakes["cheap"].set(error_status=500, error_times=2)
        chat(gw, "support")
        chat(gw, "support")
        chat(gw, "support")  # this one succeeds on cheap
    assert gw.runtime.health.snapshot()["cheap-model"] is True
    fakes["cheap"].set(error_status=500, error_times=3)   # without a success between them, three open it
    for _ in range(3):
        chat(gw, "support")
    assert gw.runtime.health.snapshot()["cheap-model"] is False


def test_every_circuit_open_is_a_503_with_the_earliest_retry_time(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, TWO, health={"failures_to_open": 2, "window_s": 10, "cooldown_s": 3}))
    fakes["cheap"].set(error_status=500)
    fakes["mid"].set(error_status=500)
    with httpx.Client(base_url=gw.url) as http:
        body = {"model": "support", "messages": MESSAGES}
        assert [http.post("/v1/chat/completions", json=body).status_code for _ in range(2)] == [500, 500]
        r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == "targets_unavailable" and "circuit open" in error["message"]
    assert r.headers["retry-after"] in ("2", "3")
    assert fakes["cheap"].calls == 2 and fakes["mid"].calls == 2


def test_the_gateways_own_queue_does_not_open_a_circuit(start_gateway, fakes):
    cfg = routing_config(fakes, TWO, health={"failures_to_open": 1, "window_s": 10, "cooldown_s": 30})
    cfg["providers"]["cheap"].update(max_concurrency=1, max_queue=0)
    gw = start_gateway(cfg)

    async def two_at_once() -> list[str]:
        client = gw.async_client()
        try:
            raws = await asyncio.gather(*(client.chat.completions.with_raw_response.create(
                model="support", messages=MESSAGES, extra_body={"fake": {"latency_s": 0.3}}) for _ in range(2)))
        finally:
            await client.close()
        return sorted(r.headers["x-gateway-target"] for r in raws)

    assert asyncio.run(two_at_once()) == ["cheap-model", "mid-model"]  # queue full: fell back
    assert gw.runtime.health.snapshot()["cheap-model"] is True
