"""Hot reload: file edits, POST /admin/reload and SIGHUP; in-flight requests finish on the old config."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .conftest import eventually, spawn_gateway_serve
from .routing_fakes import PRICES, MESSAGES, burst, chat, fakes, fakes_started, routing_config, tap  # noqa: F401

ADMIN = {"key": "sk-admin", "watch_interval_s": 0.1}


def write(path, cfg) -> str:
    text = yaml.safe_dump(cfg, sort_keys=False)
    path.write_text(text)
    return text


async def test_an_edit_under_load_fails_no_request_and_new_routes_follow(start_gateway, fakes):
    cfg = routing_config(fakes, {"support": {"targets": ["cheap-model"]}}, admin=ADMIN)
    gw = start_gateway(cfg)
    records = tap(gw)
    for fake in fakes.values():
        fake.set(latency_s=0.1)   # 200 requests, 16 at a time: over a second of load
    old = gw.runtime
    cheap_pool, strong_pool = old.providers["cheap"], old.providers["strong"]

    client = gw.async_client(timeout=30)
    # A slow request on a provider the edit replaces: it finishes on its old pool.
    slow = asyncio.create_task(client.chat.completions.with_raw_response.create(
        model="strong-model", messages=MESSAGES, extra_body={"fake": {"latency_s": 1.0}}))
    load = asyncio.create_task(burst(gw.url, [{"model": "support", "messages": MESSAGES}] * 200, concurrency=16))
    while fakes["cheap"].calls < 40:
        await asyncio.sleep(0.01)

    edited = routing_config(fakes, {"support": {"targets": ["mid-model"]}, "fresh": {"targets": ["strong-model"]}},
                            admin=ADMIN)
    edited["providers"]["strong"]["max_concurrency"] = 32    # a changed provider gets a new pool
    write(gw.config_path, edited)

    results = await load
    assert [status for status, _ in results] == [200] * 200
    targets = [target for _, target in results]
    assert targets[0] == "cheap-model" and "mid-model" in targets and set(targets) == {"cheap-model", "mid-model"}
    assert gw.runtime is not old and records.reloads == ["success"]

    raw = await slow
    assert raw.status_code == 200 and raw.headers["x-gateway-target"] == "strong-model"
    await client.close()

    assert chat(gw, "support")[0].headers["x-gateway-target"] == "mid-model"
    assert chat(gw, "fresh")[0].headers["x-gateway-target"] == "strong-model"
    new = gw.runtime
    assert new.providers["cheap"] is cheap_pool and not cheap_pool.session.closed   # unchanged: kept
    assert new.providers["strong"] is not strong_pool
    assert eventually(lambda: strong_pool.session.closed)   # retired once its last request was done
    assert new.cache is old.cache


def test_a_broken_edit_is_refused_and_the_old_routes_keep_working(start_gateway, fakes):
    # The refusal's log event (JSON, with the problems): tests/test_logs.py, on a real process.
    cfg = routing_config(fakes, {"support": {"targets": ["cheap-model"]}}, admin=ADMIN)
    gw = start_gateway(cfg)
    records = tap(gw)
    path = gw.config_path
    good = path.read_text()
    broken = good.replace("    targets:", "    targetz:", 1)
    line = broken.splitlines().index("    targetz:") + 1
    path.write_text(broken)

    assert eventually(lambda: records.reloads == ["failure"])
    assert chat(gw, "support")[0].headers["x-gateway-target"] == "cheap-model"

    with gw.http(headers={"authorization": "Bearer sk-admin"}) as http:
        r = http.post("/admin/reload")
        assert r.status_code == 422
        body = r.json()
        assert body["problems"][0].startswith(f"{path}:{line}: unknown key 'targetz'")
        assert body["error"]["code"] == "invalid_config" and f"{path}:{line}:" in body["error"]["message"]
        assert records.reloads == ["failure", "failure"]

        fixed = good.replace("  - cheap-model\n", "  - strong-model\n", 1)
        assert fixed != good
        path.write_text(fixed)
        r = http.post("/admin/reload")
        assert r.status_code == 200 and r.json()["status"] == "reloaded"
        assert http.post("/admin/reload").json()["status"] == "unchanged"
    assert chat(gw, "support")[0].headers["x-gateway-target"] == "strong-model"
    assert records.reloads == ["failure", "failure", "success", "success"]


def test_admin_reload_needs_the_admin_key(start_gateway, fakes):
    gw = start_gateway(routing_config(fakes, {"support": {"targets": ["cheap-model"]}}, admin=ADMIN))
    with gw.http() as http:
        assert http.post("/admin/reload").status_code == 401
        r = http.post("/admin/reload", headers={"authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    off = start_gateway(routing_config(fakes, {"support": {"targets": ["cheap-model"]}}))
    with off.http() as http:
        r = http.post("/admin/reload", headers={"authorization": "Bearer sk-admin"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled"


def metric(gw, name: str, **labels: str) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def priced(model: str, usage: dict, factor: float = 1.0) -> float:
    inp, out = PRICES[model.removesuffix("-model")]
    return factor * (usage["prompt_tokens"] * inp + usage["completion_tokens"] * out) / 1e6


async def finished(records, n: int):
    """The n-th finished record (the observer runs just after the client has its answer)."""
    deadline = time.monotonic() + 5
    while len(records.records) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return records.records[n - 1]


async def test_a_request_that_spans_a_reload_is_priced_as_it_ran(start_gateway, fakes):
    # A cost route answered by its cheap target: what it cost and what routing saved against the
    # strong target are both priced from the models the request ran on, not the reloaded ones.
    routes = {"frugal": {"strategy": "cost", "targets": ["strong-model", "cheap-model"]}}
    gw = start_gateway(routing_config(fakes, routes, admin=ADMIN))
    records = tap(gw)
    client = gw.async_client(timeout=30)
    slow = asyncio.create_task(client.chat.completions.with_raw_response.create(
        model="frugal", messages=MESSAGES, extra_body={"fake": {"latency_s": 1.0}}))
    while fakes["cheap"].calls < 1:
        await asyncio.sleep(0.01)

    dearer = routing_config(fakes, routes, admin=ADMIN)
    for model in dearer["models"].values():  # every price ten times what it was
        model["input_per_1m"] *= 10
        model["output_per_1m"] *= 10
    write(gw.config_path, dearer)
    while records.reloads != ["success"]:
        await asyncio.sleep(0.02)
    assert not slow.done()   # the reload came while the request was upstream

    assert (await slow).status_code == 200
    old = await finished(records, 1)
    assert old.model == "cheap-model" and old.baseline_model == "strong-model"
    assert old.cost_usd == pytest.approx(priced("cheap-model", old.usage))
    assert metric(gw, "gateway_cost_usd_total", model="cheap-model") == pytest.approx(old.cost_usd, abs=1e-12)
    saved = priced("strong-model", old.usage) - old.cost_usd
    assert metric(gw, "gateway_cost_saved_usd_total", model="strong-model") == pytest.approx(saved, abs=1e-12)

    await client.chat.completions.create(model="frugal", messages=MESSAGES)   # after the reload: new prices
    new = await finished(records, 2)
    assert new.cost_usd == pytest.approx(priced("cheap-model", new.usage, 10))
    saved += priced("strong-model", new.usage, 10) - new.cost_usd
    assert metric(gw, "gateway_cost_saved_usd_total", model="strong-model") == pytest.approx(saved, abs=1e-12)
    await client.close()


def test_circuits_of_unchanged_targets_survive_a_reload(start_gateway, fakes):
    routes = {"support": {"targets": ["cheap-model", "mid-model"]}}
    health = {"failures_to_open": 1, "window_s": 10, "cooldown_s": 30}
    gw = start_gateway(routing_config(fakes, routes, admin=ADMIN, health=health))
    fakes["cheap"].set(error_status=500)
    chat(gw, "support")
    assert gw.runtime.health.snapshot()["cheap-model"] is False
    write(gw.config_path, routing_config(fakes, {**routes, "other": {"targets": ["mid-model"]}},
                                         admin=ADMIN, health=health))
    with gw.http(headers={"authorization": "Bearer sk-admin"}) as http:
        assert http.post("/admin/reload").status_code == 200
    assert gw.runtime.health.snapshot()["cheap-model"] is False   # still open: no new failures needed
    assert chat(gw, "support")[0].headers["x-gateway-target"] == "mid-model"
    assert fakes["cheap"].calls == 1


def test_sighup_reloads_under_gateway_serve(tmp_path, fakes):
    path = tmp_path / "gateway.yaml"
    write(path, routing_config(fakes, {"support": {"targets": ["cheap-model"]}}, admin={"watch": False}))
    proc, port = spawn_gateway_serve(path)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    body = {"model": "support", "messages": MESSAGES}
    try:
        assert httpx.post(url, json=body).headers["x-gateway-target"] == "cheap-model"
        write(path, routing_config(fakes, {"support": {"targets": ["mid-model"]}}, admin={"watch": False}))
        time.sleep(0.3)
        assert httpx.post(url, json=body).headers["x-gateway-target"] == "cheap-model"  # not watching the file
        os.kill(proc.pid, signal.SIGHUP)
        assert eventually(lambda: httpx.post(url, json=body).headers["x-gateway-target"] == "mid-model")
        assert proc.poll() is None  # SIGHUP reloaded; it did not end the process
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert "Traceback" not in out
