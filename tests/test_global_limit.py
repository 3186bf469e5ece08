"""A provider's `max_concurrency` across processes (`state.backend: redis`): leases in a real
redis-server, two real `gateway serve` processes, kill -9, and Redis stopped under load."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from gateway.upstream.leases import Leases
from gateway.upstream.limiter import GlobalLimiter, LimitExceeded

from .conftest import base_config

MESSAGES = [{"role": "user", "content": "How long does a refund take?"}]


def limited_config(upstream, redis_url: str, lease_s: float = 10, on_error: str = "allow", **provider):
    # A generous timeout: on a loaded 2-core machine the event loop's own lag can pass 50 ms, and a
    # late answer falls back to this process's own count (Redis stopped is tested below).
    cfg = base_config(upstream, state={"backend": "redis", "redis_url": redis_url, "lease_s": lease_s,
                                       "on_error": on_error, "timeout_ms": 1000})
    cfg["providers"]["fake"].update({"max_concurrency": 4, "max_queue": 64, "queue_timeout_s": 30, **provider})
    return cfg


def two_gateways(tmp_path, cfg):
    from .test_logs import Served

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    return Served(tmp_path / "a", cfg), Served(tmp_path / "b", cfg)


def ask(url: str, content: str = "How long does a refund take?", stream: bool = False) -> int:
    body = {"model": "support", "messages": [{"role": "user", "content": content}], "stream": stream}
    with httpx.Client(timeout=60) as http:
        if not stream:
            return http.post(url + "/v1/chat/completions", json=body).status_code
        with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
            for _ in r.iter_bytes():
                pass
            return r.status_code


def test_max_concurrency_holds_across_two_processes(tmp_path, upstream, redis_server):
    upstream.set(latency_s=0.2)
    first, second = two_gateways(tmp_path, limited_config(upstream, redis_server.url))
    try:
        with ThreadPoolExecutor(40) as pool:
            statuses = list(pool.map(lambda i: ask((first if i % 2 else second).url), range(40)))
        assert statuses == [200] * 40
        assert upstream.max_in_flight == 4          # never more, and the four were used
        assert upstream.calls_to("/v1/chat/completions") == 40
    finally:
        first.stop()
        second.stop()


def test_a_killed_process_gives_its_slots_back_within_the_lease(tmp_path, upstream, redis_server):
    lease_s = 2.0
    upstream.set(chunk_delay_s=0.25)   # a stream of N words takes N / 4 seconds
    first, second = two_gateways(tmp_path, limited_config(upstream, redis_server.url, lease_s=lease_s))
    long_question = " ".join(["word"] * 60)   # 15 s of stream: far longer than the lease
    try:
        with ThreadPoolExecutor(8) as pool:
            held = [pool.submit(ask, first.url, long_question, True) for _ in range(4)]
            deadline = time.monotonic() + 10
            while upstream.in_flight < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert upstream.in_flight == 4
            waiting = [pool.submit(ask, second.url, "two words", True) for _ in range(4)]
            time.sleep(2 * lease_s)   # the first process renews its leases: the second one waits
            assert not any(f.done() for f in waiting) and upstream.max_in_flight == 4
            killed_at = time.monotonic()
            os.kill(first.proc.pid, signal.SIGKILL)
            assert [f.result(timeout=30) for f in waiting] == [200] * 4
            took = time.monotonic() - killed_at
            assert took < lease_s + 1.5, took    # back within the lease (plus the short streams' time)
            for f in held:
                with pytest.raises(httpx.HTTPError):
                    f.result(timeout=30)
        assert upstream.max_in_flight == 4
    finally:
        first.stop()
        second.stop()


@pytest.mark.parametrize("on_error", ["allow", "deny"])
def test_redis_stopped_under_load(start_gateway, upstream, redis_server, on_error):
    upstream.set(latency_s=1.0)
    gw = start_gateway(limited_config(upstream, redis_server.url, on_error=on_error))
    limiter = gw.runtime.providers["fake"].limiter
    with ThreadPoolExecutor(12) as pool:
        under_way = [pool.submit(ask, gw.url) for _ in range(12)]
        deadline = time.monotonic() + 10
        while (limiter.in_flight, limiter.queued) != (4, 8) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (limiter.in_flight, limiter.queued) == (4, 8)
        redis_server.stop()   # four hold a slot, eight wait for one
        statuses = [f.result(timeout=30) for f in under_way]
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "support", "messages": MESSAGES}, timeout=30)
    if on_error == "allow":   # counted in this process until Redis is back
        assert statuses == [200] * 12 and r.status_code == 200
    else:
        assert sorted(statuses) == [200] * 4 + [503] * 8   # the four holding slots finished
        assert r.status_code == 503 and r.json()["error"]["code"] == "limits_unavailable"
    assert limiter.errors >= 1
    assert upstream.max_in_flight <= 4
    exposition = httpx.get(gw.url + "/metrics").text
    failed = [line for line in exposition.splitlines() if line.startswith('gateway_state_errors_total{part="slots"}')]
    assert failed and float(failed[0].split()[-1]) >= limiter.errors


async def test_a_waiter_is_woken_when_a_slot_frees_in_another_process(redis_server):
    """Two limiters on two connections stand for two processes; the lease is long, so only the
    message that a slot freed can wake the waiter this soon."""
    here, there = Leases(redis_server.url, 0.5, 30), Leases(redis_server.url, 0.5, 30)
    mine = GlobalLimiter("p", 1, 4, 10, here, "allow")
    theirs = GlobalLimiter("p", 1, 4, 10, there, "allow")
    try:
        held = await mine.acquire()
        assert await theirs.try_acquire() is None
        for _ in range(100):                           # the subscription is up
            if there.subscribed:
                break
            await asyncio.sleep(0.01)
        waiter = asyncio.create_task(theirs.acquire())
        await asyncio.sleep(0.2)
        assert not waiter.done() and theirs.queued == 1
        freed_at = time.perf_counter()
        held.release()
        slot = await asyncio.wait_for(waiter, 5)
        assert time.perf_counter() - freed_at < 1.0    # not the 30 s lease
        assert mine.in_flight == 0 and theirs.in_flight == 1
        with pytest.raises(LimitExceeded, match="queue timeout"):
            mine.queue_timeout_s = 0.2
            await mine.acquire()
        slot.release()
        assert await _eventually_free(mine)
    finally:
        for limiter in (mine, theirs):
            await limiter.close()
        await here.close()
        await there.close()


async def _eventually_free(limiter: GlobalLimiter) -> bool:
    for _ in range(50):
        if await limiter.try_acquire() is not None:
            return True
        await asyncio.sleep(0.02)
    return False
