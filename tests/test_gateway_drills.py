"""Drills of the gateway's own parts under load (16-32 requests in flight, a few seconds each):
clients that leave at random, a broken config saved mid-load, and the semantic layer's embedder
and Qdrant going down. None may fail a request, stall one, leak a slot or cache what it should not.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from typing import Any

import aiohttp
import httpx

from .conftest import base_config, eventually
from .routing_fakes import fakes, fakes_started, routing_config  # noqa: F401

IN_FLIGHT = 24


async def ask_all(url: str, bodies: list[dict[str, Any]], concurrency: int = IN_FLIGHT,
                  during: Any = None) -> list[tuple[int, bytes]]:
    """Every body through `concurrency` connections; `during()` runs once the load is under way,
    and the load must still be under way when it returns (else the drill proved nothing)."""
    pending = list(reversed(bodies))
    out: list[tuple[int, bytes]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def worker() -> None:
            while pending:
                async with session.post(url + "/v1/chat/completions", json=pending.pop()) as r:
                    out.append((r.status, await r.read()))

        workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        if during is not None:
            while len(out) < concurrency:
                await asyncio.sleep(0.01)
            await asyncio.get_running_loop().run_in_executor(None, during)
            assert len(out) < len(bodies) - concurrency, "the fault came after the load"
        await asyncio.gather(*workers)
    return out


def questions(tag: str, n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"model": "support", "temperature": 0, "messages": [{"role": "user", "content": f"{tag} question {i}"}],
             **extra} for i in range(n)]


def test_drill_clients_that_leave_at_random_leak_no_slot(start_gateway, upstream):
    upstream.set(chunk_delay_s=0.02)   # a stream of ~12 words takes a quarter of a second
    gw = start_gateway(base_config(upstream))
    rng = random.Random(7)
    long_question = "please tell me about the refund rules for my order number seven today"

    async def one(session: aiohttp.ClientSession, i: int) -> str:
        body = {"model": "support", "stream": i % 3 != 0, "messages": [{"role": "user", "content": long_question}]}
        leave_after = rng.uniform(0.0, 0.3) if i % 2 == 0 else None
        try:
            async with asyncio.timeout(leave_after) if leave_after is not None else _nothing():
                async with session.post(gw.url + "/v1/chat/completions", json=body) as r:
                    await r.read()
                    return "done" if r.status == 200 else f"status {r.status}"
        except TimeoutError:
            return "left"

    async def run() -> list[str]:
        async with aiohttp.ClientSession() as session:
            results: list[str] = []
            for start in range(0, 96, 32):
                results += await asyncio.gather(*(one(session, i) for i in range(start, start + 32)))
            return results

    results = asyncio.run(run())
    assert "left" in results and "done" in results and not [r for r in results if r.startswith("status")]
    limiter = gw.runtime.providers["fake"].limiter
    assert eventually(lambda: limiter.in_flight == 0 and limiter.queued == 0, timeout=5)
    assert eventually(lambda: upstream.in_flight == 0, timeout=5)   # the provider saw every cancel
    assert upstream.disconnects >= 1
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "support", "messages": [
        {"role": "user", "content": "still there?"}]}, timeout=10)
    assert r.status_code == 200


class _nothing:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: Any) -> None:
        return None


def test_drill_a_broken_config_saved_mid_load_is_refused_and_nothing_fails(start_gateway, upstream):
    upstream.set(latency_s=0.1)
    cfg = base_config(upstream, admin={"key": "sk-admin", "watch": False})
    gw = start_gateway(cfg)
    good = gw.config_path.read_text()

    def break_and_mend() -> None:
        gw.config_path.write_text(good.replace("providers:", "providers:\n  broken: {base_url: 12"))
        refused = httpx.post(gw.url + "/admin/reload", headers={"authorization": "Bearer sk-admin"}, timeout=10)
        assert refused.status_code == 422 and f"{gw.config_path}:" in refused.text   # PATH:LINE
        gw.config_path.write_text(good)

    replies = asyncio.run(ask_all(gw.url, questions("reload", 240), during=break_and_mend))
    assert [status for status, _ in replies] == [200] * 240
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'gateway_config_reloads_total{result="failure"} 1.0' in metrics
    assert gw.runtime.providers["fake"].limiter.in_flight == 0


def semantic_config(fakes) -> dict[str, Any]:
    """The semantic layer on route support (answers from `cheap`), its embedder on provider `mid`,
    so that the embedder can fail alone; the exact layer holds one entry, so the semantic layer
    answers a repeated question."""
    cfg = routing_config(fakes, {"support": {"targets": ["cheap-model"], "cache": {"semantic": True}}})
    cfg["models"]["embedder"] = {"provider": "mid", "input_per_1m": 0.02}
    cfg["cache"] = {"exact": {"max_entries": 1}, "semantic": {
        "enabled": True, "embedder": {"kind": "openai", "model": "embedder"}, "timeout_ms": 1000, "cooldown_s": 0.5}}
    return cfg


def served_by_the_semantic_layer(gw, question: dict[str, Any]) -> bool:
    """Asked (and stored), then asked again once another question took the exact layer's one
    entry: a hit of the semantic layer. Ten tries a second apart: a cooldown the load left may
    still run, and a new Qdrant helper takes seconds to start on a busy machine."""
    for _ in range(10):
        assert httpx.post(gw.url + "/v1/chat/completions", json=question, timeout=10).status_code == 200
        httpx.post(gw.url + "/v1/chat/completions", json=questions("evicts the exact entry", 1)[0], timeout=10)
        again = httpx.post(gw.url + "/v1/chat/completions", json=question, timeout=10)
        if again.status_code == 200 and again.headers["x-gateway-cache"] == "hit-semantic":
            return True
        time.sleep(1.0)
    return False


def test_drill_the_embedder_down_mid_load_skips_the_semantic_layer(start_gateway, fakes):
    gw = start_gateway(semantic_config(fakes))
    fakes["cheap"].set(latency_s=0.1)   # the answers take a while: the embedder fails mid-load

    def embedder_down() -> None:
        fakes["mid"].set(error_status=503)

    started = time.monotonic()
    replies = asyncio.run(ask_all(gw.url, questions("embedder", 240), during=embedder_down))
    took = time.monotonic() - started
    assert [status for status, _ in replies] == [200] * 240
    stats = gw.runtime.cache.semantic.stats
    assert stats["embedder_errors"] >= 1 and stats["skipped"] >= 1, stats   # failed, then skipped in its cooldown
    assert took < 20, took
    fakes["mid"].set(error_status=0)
    time.sleep(0.6)   # the cooldown
    assert served_by_the_semantic_layer(gw, questions("back", 1)[0])


def test_drill_qdrant_killed_mid_load_is_a_miss_and_comes_back(start_gateway, fakes):
    gw = start_gateway(semantic_config(fakes))
    semantic = gw.runtime.cache.semantic
    warm = questions("warm", 4)
    asyncio.run(ask_all(gw.url, warm))   # the helper process is up and holds these
    helper = semantic._store._helper.process
    assert helper.poll() is None

    def qdrant_down() -> None:
        os.kill(helper.pid, signal.SIGKILL)

    fakes["cheap"].set(latency_s=0.1)
    replies = asyncio.run(ask_all(gw.url, questions("qdrant", 240), during=qdrant_down))
    assert [status for status, _ in replies] == [200] * 240
    assert eventually(lambda: helper.poll() is not None)
    time.sleep(0.6)   # the cooldown, if a search was in flight when it died
    # A new helper takes over (the default store is a temporary shard: what the dead one held is gone).
    assert served_by_the_semantic_layer(gw, questions("after", 1)[0]), str(semantic.stats)
    assert semantic._store._helper.process.pid != helper.pid
