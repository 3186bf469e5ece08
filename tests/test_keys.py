"""Gateway keys: a key or its SHA-256 in the config, the models a key may use, revocation by reload,
`gateway hash-key`, and check-config's suggestions inside auth.keys."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from .conftest import base_config

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "How long does a refund take?"}]
SUPPORT_KEY, ADMIN = "sk-support-team-1", "sk-admin"


def keyed_config(upstream, **overrides):
    cfg = base_config(upstream, admin={"key": ADMIN, "watch": False})
    cfg["auth"] = {"keys": [
        {"name": "support-team", "key_sha256": hashlib.sha256(SUPPORT_KEY.encode()).hexdigest(),
         "models": ["support", "gpt-4o*"]},
        {"name": "ops", "key": "sk-ops-everything"},
    ]}
    cfg.update(overrides)
    return cfg


def test_a_key_given_by_its_hash_works_and_is_never_sent_upstream(start_gateway, upstream):
    gw = start_gateway(keyed_config(upstream))
    answer = gw.client(api_key=SUPPORT_KEY).chat.completions.create(model="support", messages=MESSAGES)
    assert answer.choices[0].message.content.startswith("Echo:")
    assert upstream.seen[-1].headers["authorization"] == "Bearer sk-provider-secret"
    with pytest.raises(openai.AuthenticationError):
        gw.client(api_key=SUPPORT_KEY + "x").chat.completions.create(model="support", messages=MESSAGES)


def test_a_key_uses_only_its_models(start_gateway, upstream):
    gw = start_gateway(keyed_config(upstream))
    team, ops = gw.client(api_key=SUPPORT_KEY), gw.client(api_key="sk-ops-everything")
    assert team.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).model   # a glob
    with pytest.raises(openai.PermissionDeniedError) as caught:
        team.embeddings.create(model="text-embedding-3-small", input=["a cat"])
    assert caught.value.status_code == 403 and caught.value.body["code"] == "model_not_allowed"
    assert SUPPORT_KEY not in str(caught.value.body)
    assert {m.id for m in team.models.list()} == {"support", "gpt-4o-mini", "gpt-4o"}
    assert "text-embedding-3-small" in {m.id for m in ops.models.list()}
    with pytest.raises(openai.NotFoundError):
        team.models.retrieve("text-embedding-3-small")
    assert ops.embeddings.create(model="text-embedding-3-small", input=["a cat"]).data


def test_a_reload_that_removes_a_key_revokes_it_at_once(start_gateway, upstream):
    cfg = keyed_config(upstream)
    gw = start_gateway(cfg)
    ops = gw.client(api_key="sk-ops-everything")
    assert ops.chat.completions.create(model="support", messages=MESSAGES)
    cfg["auth"]["keys"] = cfg["auth"]["keys"][:1]
    gw.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert httpx.post(gw.url + "/admin/reload", headers={"authorization": f"Bearer {ADMIN}"}).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        ops.chat.completions.create(model="support", messages=MESSAGES)


def test_hash_key_reads_stdin_and_prints_the_digest():
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "hash-key"], input=SUPPORT_KEY + "\n",
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == hashlib.sha256(SUPPORT_KEY.encode()).hexdigest()
    empty = subprocess.run([sys.executable, "-m", "gateway.cli", "hash-key"], input="", capture_output=True,
                           text=True, cwd=ROOT)
    assert empty.returncode == 1 and "stdin" in empty.stderr


@pytest.mark.parametrize("key_line, words", [
    ("{name: a, key: b, modls: [support]}", ["unknown key 'modls'", "did you mean 'models'"]),
    ("{name: a, key: b, key_sha256: '" + "0" * 64 + "'}", ["exactly one of key and key_sha256"]),
    ("{name: a, key_sha256: abc}", ["64 hex digits"]),
])
def test_check_config_names_the_keys_valid_under_auth_keys(tmp_path, key_line, words):
    path = tmp_path / "gateway.yaml"
    path.write_text(textwrap.dedent(f"""\
        providers:
          openai: {{base_url: "https://api.openai.com/v1"}}
        models:
          gpt-4o-mini: {{provider: openai}}
        routes:
          support: {{targets: [gpt-4o-mini]}}
        auth:
          keys:
            - {key_line}
        """))
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(path)], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 1
    assert f"{path}:9:" in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr
    assert "did you mean 'models'" in done.stderr or "modls" not in key_line


# ---- requests per minute, in this process or shared through Redis -----------------------------------


def rpm_config(upstream, rpm: int, **state):
    cfg = keyed_config(upstream)
    cfg["auth"]["keys"][1]["rpm"] = rpm
    if state:
        cfg["state"] = state
    return cfg


def test_a_key_over_its_rpm_gets_429_with_retry_after(start_gateway, upstream):
    gw = start_gateway(rpm_config(upstream, 3))
    ops = gw.client(api_key="sk-ops-everything")
    for _ in range(3):
        ops.chat.completions.create(model="support", messages=MESSAGES)
    calls = len(upstream.seen)
    with pytest.raises(openai.RateLimitError) as caught:
        ops.chat.completions.create(model="support", messages=MESSAGES)
    assert caught.value.body["code"] == "rate_limit_exceeded" and "3 requests per minute" in caught.value.body["message"]
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
    assert len(upstream.seen) == calls                               # refused before any upstream call
    team = gw.client(api_key=SUPPORT_KEY)                            # another key has its own count
    assert team.chat.completions.create(model="support", messages=MESSAGES)


def test_rpm_holds_across_two_processes_on_one_redis(tmp_path, upstream, redis_server):
    from .test_logs import Served

    cfg = rpm_config(upstream, 10, backend="redis", redis_url=redis_server.url)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first, second = Served(tmp_path / "a", cfg), Served(tmp_path / "b", cfg)
    try:
        statuses = []
        for i in range(14):   # alternately through each process
            gw = first if i % 2 == 0 else second
            r = httpx.post(gw.url + "/v1/chat/completions", timeout=10,
                           headers={"authorization": "Bearer sk-ops-everything"},
                           json={"model": "support", "messages": MESSAGES})
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1
        assert statuses == [200] * 10 + [429] * 4
    finally:
        first.stop()
        second.stop()


@pytest.mark.parametrize("on_error, status", [("allow", 200), ("deny", 503)])
def test_redis_down_allows_or_denies_as_configured(start_gateway, upstream, redis_server, on_error, status):
    gw = start_gateway(rpm_config(upstream, 10, backend="redis", redis_url=redis_server.url, on_error=on_error))
    ops = {"authorization": "Bearer sk-ops-everything"}
    with gw.http(headers=ops) as http:
        assert http.post("/v1/chat/completions", json={"model": "support", "messages": MESSAGES}).status_code == 200
        redis_server.stop()
        r = http.post("/v1/chat/completions", json={"model": "support", "messages": MESSAGES})
        assert r.status_code == status
        if status == 503:
            assert r.json()["error"]["code"] == "limits_unavailable"
    assert gw.runtime.quota.errors >= 1


# ---- tokens per minute and budgets ---------------------------------------------------------------

# The fake upstream counts words: this question is 9 prompt tokens, its echo 7 completion tokens.
PROMPT_TOKENS, COMPLETION_TOKENS = 9, 7
PRICES = {"input_per_1m": 1000.0, "output_per_1m": 2000.0}   # so a request costs $0.023
COST = (PROMPT_TOKENS * 1000.0 + COMPLETION_TOKENS * 2000.0) / 1e6


def clear_of_a_minute_boundary() -> None:
    """tpm counts in minute buckets: keep a short test inside one."""
    into = time.time() % 60
    if into > 50:
        time.sleep(60.5 - into)


def limited_config(upstream, **limits):
    cfg = keyed_config(upstream)
    cfg["models"]["gpt-4o-mini"].update(PRICES)
    cfg["auth"]["keys"][1].update(limits)
    return cfg


def key_report(url: str, name: str = "ops") -> dict:
    keys = httpx.get(url + "/admin/keys", headers={"authorization": f"Bearer {ADMIN}"}).json()["keys"]
    return next(k for k in keys if k["name"] == name)


def settled(url: str, check) -> dict:
    deadline = time.monotonic() + 5
    while not check(report := key_report(url)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return report


def test_tpm_reserves_the_estimate_and_keeps_the_real_usage(start_gateway, upstream):
    clear_of_a_minute_boundary()
    gw = start_gateway(limited_config(upstream, tpm=40))
    ops = gw.client(api_key="sk-ops-everything")
    with pytest.raises(openai.RateLimitError) as alone:
        ops.chat.completions.create(model="support", messages=MESSAGES, max_tokens=100)
    assert "this request alone" in alone.value.body["message"] and alone.value.body["type"] == "tokens"
    used = PROMPT_TOKENS + COMPLETION_TOKENS
    for n in (1, 2):   # each reserves ~7 + 10 and then keeps what it used (16)
        ops.chat.completions.create(model="support", messages=MESSAGES, max_tokens=10)
        assert settled(gw.url, lambda r: r["tokens_last_minute"] == n * used)["tokens_last_minute"] == n * used
    with pytest.raises(openai.RateLimitError) as over:   # 32 used + 17 reserved > 40
        ops.chat.completions.create(model="support", messages=MESSAGES, max_tokens=10)
    assert over.value.body["code"] == "rate_limit_exceeded" and 1 <= int(over.value.response.headers["retry-after"]) <= 60


def test_tpm_holds_across_two_processes_on_one_redis(tmp_path, upstream, redis_server):
    from .test_logs import Served

    clear_of_a_minute_boundary()
    cfg = limited_config(upstream, tpm=40)
    cfg["state"] = {"backend": "redis", "redis_url": redis_server.url}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first, second = Served(tmp_path / "a", cfg), Served(tmp_path / "b", cfg)
    used = PROMPT_TOKENS + COMPLETION_TOKENS

    def ask(gw) -> httpx.Response:
        return httpx.post(gw.url + "/v1/chat/completions", timeout=10, headers={"authorization": "Bearer sk-ops-everything"},
                          json={"model": "support", "messages": MESSAGES, "max_tokens": 10})

    try:
        for n, gw in enumerate((first, second), start=1):   # each reserves ~17 and keeps the 16 it used
            assert ask(gw).status_code == 200
            assert settled(first.url, lambda r: r["tokens_last_minute"] == n * used)["tokens_last_minute"] == n * used
        over = ask(first)   # 32 used + 17 reserved > 40
        assert over.status_code == 429 and over.json()["error"]["type"] == "tokens" and "retry-after" in over.headers
    finally:
        first.stop()
        second.stop()


def test_a_budget_is_charged_the_real_cost_across_two_processes(tmp_path, upstream, redis_server):
    from .test_logs import Served

    cfg = limited_config(upstream, budget={"usd": 0.05, "period": "day"})
    cfg["state"] = {"backend": "redis", "redis_url": redis_server.url}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first, second = Served(tmp_path / "a", cfg), Served(tmp_path / "b", cfg)
    try:
        def ask(gw) -> httpx.Response:
            return httpx.post(gw.url + "/v1/chat/completions", timeout=10, json={"model": "support", "messages": MESSAGES},
                              headers={"authorization": "Bearer sk-ops-everything"})

        for n, gw in enumerate((first, second, first), start=1):   # under the budget before each: served
            assert ask(gw).status_code == 200
            spent = settled(second.url, lambda r: r["budget"]["spent_usd"] >= round(n * COST, 8) - 1e-9)
            assert spent["budget"]["spent_usd"] == pytest.approx(n * COST, abs=1e-9)   # to the cent and beyond
        refused = ask(second)
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "insufficient_quota" and "$0.05" in error["message"] and "per day" in error["message"]
        assert "resets at" in error["message"] and int(refused.headers["retry-after"]) >= 1
        report = key_report(first.url)
        assert report["budget"]["left_usd"] == 0 and report["budget"]["resets_at"].endswith("+00:00")
        for gw in (first, second):
            assert "sk-ops-everything" not in gw.stdout_path.read_text() + httpx.get(gw.url + "/metrics").text
    finally:
        first.stop()
        second.stop()


def test_admin_keys_needs_the_admin_key_and_never_shows_a_key(start_gateway, upstream):
    gw = start_gateway(limited_config(upstream, rpm=5, tpm=1000, budget={"usd": 1, "period": "month"}))
    gw.client(api_key="sk-ops-everything").chat.completions.create(model="support", messages=MESSAGES)
    assert httpx.get(gw.url + "/admin/keys").status_code == 401
    body = httpx.get(gw.url + "/admin/keys", headers={"authorization": f"Bearer {ADMIN}"}).text
    assert "sk-ops-everything" not in body and hashlib.sha256(SUPPORT_KEY.encode()).hexdigest() not in body
    ops = settled(gw.url, lambda r: r["budget"]["spent_usd"] > 0)
    assert ops["requests_last_minute"] == 1 and ops["rpm"] == 5 and ops["budget"]["period"] == "month"
    assert ops["budget"]["spent_usd"] == pytest.approx(COST)


def test_serve_with_workers_warns_that_memory_limits_are_per_worker(tmp_path, upstream):
    cfg = rpm_config(upstream, 10)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    from .fake_upstream import free_port

    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--port",
                             str(free_port()), "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        first, second = proc.stderr.readline(), proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(30)
    assert first.startswith("warning: with 2 workers and state.backend: memory") and "max_concurrency" in first
    assert second.startswith("warning: with 2 workers") and "ops" in second and "state.backend: redis" in second
    cfg["state"] = {"backend": "redis"}
    from gateway.cli import per_worker_warnings
    from gateway.config import GatewayConfig

    assert per_worker_warnings(GatewayConfig.model_validate(cfg), 2) == []
    assert per_worker_warnings(GatewayConfig.model_validate(rpm_config(upstream, 10)), 1) == []


def test_the_semantic_layers_own_calls_are_charged_to_the_budget(start_gateway, upstream):
    cfg = limited_config(upstream, budget={"usd": 10, "period": "day"})
    cfg["models"]["text-embedding-3-small"]["input_per_1m"] = 1000.0   # the question's 6 words: $0.006
    cfg["cache"] = {"semantic": {"enabled": True, "embedder": {"kind": "openai", "model": "text-embedding-3-small"}}}
    cfg["routes"]["support"]["cache"] = {"semantic": True}
    gw = start_gateway(cfg)
    ops = gw.client(api_key="sk-ops-everything")
    answer = ops.chat.completions.with_raw_response.create(model="support", messages=MESSAGES, temperature=0)
    assert answer.headers["x-gateway-cache"] == "miss"
    embedding = 6 * 1000.0 / 1e6
    report = settled(gw.url, lambda r: r["budget"]["spent_usd"] > 0)
    assert report["budget"]["spent_usd"] == pytest.approx(COST + embedding, abs=1e-9)
    again = ops.chat.completions.with_raw_response.create(model="support", messages=MESSAGES, temperature=0)
    assert again.headers["x-gateway-cache"] == "hit-exact"               # nothing called: nothing charged
    time.sleep(0.2)
    assert key_report(gw.url)["budget"]["spent_usd"] == pytest.approx(COST + embedding, abs=1e-9)
