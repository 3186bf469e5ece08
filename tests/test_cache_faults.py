"""The exact cache when a client or Redis misbehaves: a TTL header out of bounds, a command Redis
refuses, a Redis call that times out while a leader holds its lock, and Redis stopped and started
under load with identical requests in flight."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from gateway.cache.coalesce import POLL_S
from gateway.cache.entry import Entry
from gateway.cache.redis_store import LOCK_PREFIX, RedisStore
from gateway.config import ExactCacheConfig

from .conftest import base_config, eventually

Q = [{"role": "user", "content": "How long does a refund take?"}]
MAX_TTL_S = ExactCacheConfig().max_ttl_s


def redis_config(upstream, redis_url, **exact):
    cfg = base_config(upstream)
    cfg["cache"] = {"exact": {"backend": "redis", "redis_url": redis_url, **exact}}
    return cfg


def chat(http: httpx.Client, content: str = Q[0]["content"], headers: dict[str, str] | None = None) -> httpx.Response:
    return http.post("/v1/chat/completions", headers=headers or {}, json={
        "model": "support", "messages": [{"role": "user", "content": content}], "temperature": 0})


def locks(url: str) -> list[bytes]:
    return redis.Redis.from_url(url).keys(LOCK_PREFIX + "*")


# ---- x-gateway-cache-ttl -----------------------------------------------------------------------

@pytest.mark.parametrize("asked", [
    "9" * 5000, "9" * 401, "9" * 31, str(MAX_TTL_S + 1), "0", "-5", "1.5", "1e3", "soon", "",
    b"\xb2",          # "²" in Latin-1: a digit to str.isdigit, not to int()
])
def test_an_out_of_bounds_ttl_header_is_a_400_and_redis_stays_on(start_gateway, upstream, redis_server, asked):
    gw = start_gateway(redis_config(upstream, redis_server.url, timeout_ms=1000))
    with gw.http() as http:
        assert chat(http).headers["x-gateway-cache"] == "miss"
        header = asked.encode() if isinstance(asked, str) else asked
        response = http.post("/v1/chat/completions", headers=[(b"x-gateway-cache-ttl", header)],
                             json={"model": "support", "messages": Q, "temperature": 0})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert "x-gateway-cache-ttl" in error["message"] and str(MAX_TTL_S) in error["message"]
        # Nobody else is affected: Redis still answers the next request.
        assert chat(http).headers["x-gateway-cache"] == "hit-exact"
    assert gw.runtime.cache.store.errors == 0


def test_ttl_header_up_to_the_maximum_is_the_entry_ttl(start_gateway, upstream, redis_server):
    cfg = redis_config(upstream, redis_server.url, timeout_ms=1000, max_ttl_s=600)
    gw = start_gateway(cfg)
    with gw.http() as http:
        response = chat(http, "kept ten minutes", {"x-gateway-cache-ttl": "600"})
        assert response.status_code == 200
        ttl = redis.Redis.from_url(redis_server.url).ttl(response.headers["x-gateway-cache-key"])
        assert 590 <= ttl <= 600
        refused = chat(http, "kept longer", {"x-gateway-cache-ttl": "601"})
        assert refused.status_code == 400 and "600" in refused.json()["error"]["message"]


def test_a_ttl_above_the_maximum_is_refused_at_load(start_gateway, upstream, tmp_path):
    from gateway.config import ConfigError, load_config

    path = tmp_path / "gateway.yaml"
    path.write_text("providers: {}\nmodels: {}\nroutes: {}\n"
                    "cache:\n  exact:\n    ttl_s: 7200\n    max_ttl_s: 3600\n")
    with pytest.raises(ConfigError, match=r"ttl_s \(7200\) is above max_ttl_s \(3600\)"):
        load_config(path)


# ---- a command Redis refuses is that request's miss, not an outage -----------------------------

def test_a_command_redis_refuses_is_a_miss_and_redis_stays_on(start_gateway, upstream, redis_server):
    gw = start_gateway(redis_config(upstream, redis_server.url, timeout_ms=1000, cooldown_s=60))
    admin = redis.Redis.from_url(redis_server.url)
    with gw.http() as http:
        chat(http)
        assert chat(http).headers["x-gateway-cache"] == "hit-exact"
        # Redis out of memory refuses every write (the lock and the store), and answers reads.
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")
        try:
            refused = chat(http, "a new question")
            assert refused.status_code == 200 and refused.headers["x-gateway-cache"] == "miss"
            assert eventually(lambda: gw.runtime.cache.store.errors >= 1)
            # The refusal counted against that request alone: the shared cache still serves hits.
            assert chat(http).headers["x-gateway-cache"] == "hit-exact"
        finally:
            admin.config_set("maxmemory", "0")
        chat(http, "a new question")
        assert chat(http, "a new question").headers["x-gateway-cache"] == "hit-exact"


async def test_refused_commands_count_and_only_connection_failures_cool_down(redis_server):
    store = RedisStore(redis_server.url, timeout_ms=1000, cooldown_s=60)
    try:
        await store.set("kept", store.pack(Entry("m", {"choices": []})), 60)
        await store.set("refused", b"x", 1e30)  # an expiry Redis refuses ("invalid expire time")
        assert store.errors == 1
        assert await store.get("kept") is not None  # not skipped: Redis is up
        redis_server.stop()
        assert await store.get("kept") is None and store.errors == 2
        redis_server.start()
        assert await store.get("anything") is None and store.errors == 2  # skipped: the cooldown
    finally:
        await store.close()


# ---- the single-flight lock never outlives its flight ------------------------------------------

async def test_a_redis_timeout_during_a_flight_leaves_no_lock_behind(start_gateway, upstream, redis_server):
    """A Redis call that times out starts the cooldown; the leader's unlock is made anyway, so the
    next identical request leads at once instead of waiting for a lock nobody holds."""
    cfg = redis_config(upstream, redis_server.url, timeout_ms=100, cooldown_s=1)
    gw = start_gateway(cfg)
    exact = gw.runtime.config.cache.exact
    latency_s = 0.6
    upstream.set(latency_s=latency_s)
    admin = aioredis.Redis.from_url(redis_server.url)
    async with httpx.AsyncClient(base_url=gw.url, timeout=60) as http:
        async def ask(content):
            return await http.post("/v1/chat/completions", json={
                "model": "support", "messages": [{"role": "user", "content": content}], "temperature": 0})

        leader = asyncio.create_task(ask(Q[0]["content"]))
        await asyncio.sleep(0.2)                     # the leader holds its lock now
        assert await admin.keys(LOCK_PREFIX + "*")
        await admin.client_pause(250)                # Redis answers nobody for 250 ms
        other = await ask("another question")        # its lookup times out: the cooldown starts
        assert other.status_code == 200
        first = await leader                         # finished inside the cooldown
        assert first.status_code == 200
        key = LOCK_PREFIX + first.headers["x-gateway-cache-key"]
        assert await eventually_async(lambda: admin.exists(key), False, exact.timeout_ms * 4 / 1000)
        await asyncio.sleep(exact.cooldown_s)        # Redis is asked again
        started = time.monotonic()
        again = await ask(Q[0]["content"])
        waited = time.monotonic() - started
    await admin.aclose()
    assert again.status_code == 200
    # Its own lookup, lock and call. A lock left behind would hold it until the lock expired:
    # a lease at most now, lock_ms before.
    assert waited < latency_s + exact.lock_lease_ms / 1000, waited


async def eventually_async(read, expected, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if bool(await read()) == expected:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)


async def test_a_long_call_keeps_its_lock_by_renewing_it(start_gateway, upstream, redis_server):
    """The lock's expiry is short (the lease) and a live leader renews it: an identical request on
    another replica still waits for the answer of a call longer than the lease."""
    cfg = redis_config(upstream, redis_server.url, timeout_ms=300, lock_lease_ms=1500)
    replicas = [start_gateway(cfg), start_gateway(cfg)]
    lease_s = replicas[0].runtime.config.cache.exact.lock_lease_ms / 1000
    upstream.set(latency_s=lease_s * 2)
    admin = aioredis.Redis.from_url(redis_server.url)
    async with httpx.AsyncClient(timeout=60) as http:
        def ask(gw):
            return http.post(gw.url + "/v1/chat/completions", json={"model": "support", "messages": Q,
                                                                    "temperature": 0})

        leader = asyncio.create_task(ask(replicas[0]))
        await asyncio.sleep(lease_s / 2)
        follower = asyncio.create_task(ask(replicas[1]))
        await asyncio.sleep(lease_s)                 # past the first expiry
        held = await admin.keys(LOCK_PREFIX + "*")
        assert len(held) == 1 and 0 < await admin.pttl(held[0]) <= lease_s * 1000
        first, second = await leader, await follower
    assert first.status_code == second.status_code == 200
    assert upstream.calls == 1 and second.headers["x-gateway-cache"] == "hit-exact"
    assert await eventually_async(lambda: admin.keys(LOCK_PREFIX + "*"), False, 1)
    await admin.aclose()


# ---- the drill: Redis stopped and started, or frozen, under load --------------------------------

CLIENTS = 24
QUESTIONS = 4   # asked in turn, SLOT_S each; stored for 1 s, so each is a miss again on its next turn
SLOT_S = 0.3


@pytest.mark.parametrize("fault", ["restart", "freeze"])
async def test_redis_failing_under_load_with_identical_requests_in_flight(start_gateway, upstream, redis_server, fault):
    """Two replicas share Redis; 24 clients ask the same question (one of four in turn, each
    stored for a second, so each turn starts with identical misses in flight) while Redis is
    stopped and started again (its locks and entries gone) or frozen for a second (they outlive
    the freeze, and calls time out meanwhile). No request fails, none waits longer than the
    cache's own timeouts allow, hits resume once Redis is back, and no lock is left behind."""
    latency_s = 0.2
    cfg = redis_config(upstream, redis_server.url, timeout_ms=100, cooldown_s=1)
    replicas = [start_gateway(cfg), start_gateway(cfg)]
    exact = replicas[0].runtime.config.cache.exact
    upstream.set(latency_s=latency_s)
    timeout_s, lease_s = exact.timeout_ms / 1000, exact.lock_lease_ms / 1000
    results: list[tuple[float, float, int, str]] = []   # (started, waited, status, x-gateway-cache)
    t0 = time.monotonic()
    phases = {"up": 1.6, "down": 1.0, "back": 3.0}  # the fault comes mid-turn: locks are held
    end = t0 + sum(phases.values())

    async def client(i: int, http: httpx.AsyncClient) -> None:
        gw = replicas[i % len(replicas)]
        while time.monotonic() < end:
            started = time.monotonic()
            question = f"drill question {int((started - t0) / SLOT_S) % QUESTIONS}"
            try:
                r = await http.post(gw.url + "/v1/chat/completions", headers={"x-gateway-cache-ttl": "1"}, json={
                    "model": "support", "messages": [{"role": "user", "content": question}], "temperature": 0})
                status, cache = r.status_code, r.headers.get("x-gateway-cache", "")
                if status == 200:
                    assert r.json()["choices"][0]["message"]["content"] == "Echo: " + question
            except httpx.HTTPError as exc:
                status, cache = 0, type(exc).__name__
            results.append((started - t0, time.monotonic() - started, status, cache))

    async def fail_redis() -> None:
        await asyncio.sleep(phases["up"])
        if fault == "restart":
            await asyncio.to_thread(redis_server.stop)
            await asyncio.sleep(phases["down"])
            await asyncio.to_thread(redis_server.start)
        else:
            os.kill(redis_server.proc.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(phases["down"])
            finally:  # a frozen server would not stop at the fixture's end
                os.kill(redis_server.proc.pid, signal.SIGCONT)

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(fail_redis(), *(client(i, http) for i in range(CLIENTS)))

    failed = [r for r in results if r[2] != 200]
    assert not failed, failed[:5]
    # What the same load costs on this machine with Redis up: the allowance for scheduling.
    steady = max(w for s, w, _, _ in results if s < phases["up"] - 0.5)
    # A request's own lookup and lock, then at worst: a leader's flight (its lookup, lock and call)
    # or a lock whose leader lost Redis before unlocking (it expires within the lease), polled
    # every POLL_S with two bounded calls; then its own call.
    bound = 2 * timeout_s + max(2 * timeout_s + latency_s, lease_s + POLL_S + 2 * timeout_s) + latency_s + steady
    worst = max(results, key=lambda r: r[1])
    assert worst[1] < bound, (worst, bound, f"{len(results)} requests")
    back = phases["up"] + phases["down"] + exact.cooldown_s + 0.5
    assert any(s > back and cache == "hit-exact" for s, _, _, cache in results)
    assert eventually(lambda: not locks(redis_server.url), lease_s / 2)
    # And the shared entry is there for the other replica.
    with replicas[0].http() as a, replicas[1].http() as b:
        chat(a, "after the drill")
        assert eventually(lambda: chat(b, "after the drill").headers["x-gateway-cache"] == "hit-exact",
                          exact.cooldown_s + 1)
