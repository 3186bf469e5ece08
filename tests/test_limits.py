"""Per-provider concurrency: slots, the bounded FIFO queue, 429 with Retry-After, disconnects."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from gateway.upstream.limiter import LimitExceeded, Limiter

from .conftest import base_config, eventually

MESSAGES = [{"role": "user", "content": "hi"}]


def limited(upstream, **limits):
    cfg = base_config(upstream)
    cfg["providers"]["fake"].update(limits)
    return cfg


async def _burst(gw, n: int) -> list:
    client = gw.async_client(timeout=30)
    try:
        return await asyncio.gather(
            *(client.chat.completions.create(model="support", messages=MESSAGES) for _ in range(n)),
            return_exceptions=True,
        )
    finally:
        await client.close()


async def test_upstream_never_sees_more_than_max_concurrency(start_gateway, upstream):
    gw = start_gateway(limited(upstream, max_concurrency=4, max_queue=100))
    upstream.set(latency_s=0.05)
    results = await _burst(gw, 50)
    assert all(not isinstance(r, Exception) for r in results), [r for r in results if isinstance(r, Exception)][:3]
    assert upstream.calls == 50
    assert upstream.max_in_flight == 4


async def test_excess_beyond_the_queue_gets_429_with_retry_after(start_gateway, upstream):
    gw = start_gateway(limited(upstream, max_concurrency=4, max_queue=10, queue_timeout_s=30))
    upstream.set(latency_s=1.0)
    results = await _burst(gw, 50)
    rejected = [r for r in results if isinstance(r, openai.RateLimitError)]
    served = [r for r in results if not isinstance(r, Exception)]
    assert len(served) == 14 and len(rejected) == 36  # 4 in flight + 10 queued; the rest told to come back
    assert rejected[0].response.headers["retry-after"] == "1"
    assert rejected[0].code == "rate_limit_exceeded"
    assert upstream.max_in_flight == 4


async def test_waiting_longer_than_queue_timeout_gets_429(start_gateway, upstream):
    gw = start_gateway(limited(upstream, max_concurrency=1, max_queue=10, queue_timeout_s=0.2))
    upstream.set(latency_s=1.0)
    results = await _burst(gw, 3)
    assert sum(isinstance(r, openai.RateLimitError) for r in results) == 2
    assert "queue timeout" in next(r for r in results if isinstance(r, Exception)).message


def test_stream_holds_its_slot_and_a_dropped_client_frees_it(gateway, upstream):
    upstream.set(chunk_delay_s=0.2, reply=" ".join(["word"] * 100))
    limiter = gateway.runtime.providers["fake"].limiter
    body = {"model": "support", "messages": MESSAGES, "stream": True}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", gateway.base_url + "/chat/completions", json=body) as response:
            lines = response.iter_lines()
            for line in lines:
                if line.startswith("data:") and "word" in line:
                    break
            assert limiter.in_flight == 1
            started = time.monotonic()
    # The client left after one word of a 20-second answer: the upstream is told at once.
    assert eventually(lambda: upstream.disconnects == 1, timeout=3)
    assert eventually(lambda: limiter.in_flight == 0, timeout=3)
    assert time.monotonic() - started < 2


async def test_limiter_is_first_come_first_served():
    limiter = Limiter(max_concurrency=1, max_queue=5, queue_timeout_s=5)
    first = await limiter.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        slot = await limiter.acquire()
        order.append(i)
        await asyncio.sleep(0)
        slot.release()
        slot.release()   # once only, however often

    tasks = [asyncio.create_task(waiter(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    with pytest.raises(LimitExceeded, match="queue full"):
        await limiter.acquire()
    first.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert limiter.in_flight == 0 and limiter.queued == 0


async def test_limiter_cancelled_waiter_gives_no_slot_away():
    limiter = Limiter(max_concurrency=1, max_queue=5, queue_timeout_s=5)
    held = await limiter.acquire()
    task = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.queued == 0
    held.release()
    assert limiter.in_flight == 0
