"""The request log: one JSON line per request on stdout of a real `gateway serve` process, with
the documented fields, and never a key or (unless `log.content`) a message."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .fake_upstream import FakeUpstream, free_port

PROVIDER_KEY = "sk-provider-SECRET-0001"
GATEWAY_KEY = "gw-team-SECRET-0002"
WRONG_KEY = "sk-client-SECRET-0003"
PLAN = "the quarterly plan is codename bluebird"

FIELDS = {"ts", "level", "request_id", "route", "target", "provider", "model", "status", "cache", "stream",
          "latency_ms", "ttft_ms", "upstream_ms", "prompt_tokens", "completion_tokens", "cost_usd", "retries",
          "fallbacks", "error"}


class Served:
    def __init__(self, tmp: Path, config: dict[str, Any]):
        path = tmp / "gateway.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout_path, self.stderr_path = tmp / "stdout.log", tmp / "stderr.log"
        self._out, self._err = open(self.stdout_path, "wb"), open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path),
                                      "--port", str(self.port)], stdout=self._out, stderr=self._err)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start: {self.stderr_path.read_text()}")
            time.sleep(0.05)

    def stop(self) -> tuple[list[dict[str, Any]], str, str]:
        """Stop the process (the log is flushed on shutdown); its JSON lines, raw stdout and stderr."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self._out.close()
        self._err.close()
        out, err = self.stdout_path.read_text(), self.stderr_path.read_text()
        return [orjson.loads(line) for line in out.splitlines() if line.strip()], out, err


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def start(config: dict[str, Any]) -> Served:
        started.append(Served(tmp_path, config))
        return started[-1]

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(10)


def config(upstream: FakeUpstream, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "auth": {"keys": [{"name": "team-a", "key": GATEWAY_KEY}]},
        "providers": {"fake": {"base_url": upstream.url, "api_key": PROVIDER_KEY}},
        "models": {"gpt-4o-mini": {"provider": "fake", "input_per_1m": 0.15, "output_per_1m": 0.60}},
        "routes": {"support": {"targets": ["gpt-4o-mini"]}},
    }
    cfg.update(overrides)
    return cfg


def ask(url: str, key: str, text: str, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", timeout=10,
                      headers={"authorization": f"Bearer {key}", **(headers or {})},
                      json={"model": body.pop("model", "support"), "messages": [{"role": "user", "content": text}],
                            **body})


def test_one_json_line_per_request_and_no_secrets(serve, upstream):
    gw = serve(config(upstream))
    ok = ask(gw.url, GATEWAY_KEY, PLAN, headers={"x-request-id": "req-plain"})
    assert ok.status_code == 200
    assert ask(gw.url, GATEWAY_KEY, PLAN, headers={"x-request-id": "req-stream"}, stream=True).status_code == 200
    assert ask(gw.url, WRONG_KEY, PLAN, headers={"x-request-id": "req-401"}).status_code == 401
    assert ask(gw.url, GATEWAY_KEY, PLAN, headers={"x-request-id": "req-404"}, model="nope").status_code == 404
    upstream.set(error_status=500, error_times=1)
    assert ask(gw.url, GATEWAY_KEY, PLAN, headers={"x-request-id": "req-500"}).status_code == 500
    assert upstream.seen[0].headers["authorization"] == f"Bearer {PROVIDER_KEY}"  # the key was really in use
    lines, out, err = gw.stop()

    by_id = {line["request_id"]: line for line in lines}
    assert len(lines) == 5 and set(by_id) == {"req-plain", "req-stream", "req-401", "req-404", "req-500"}
    for line in lines:
        assert FIELDS <= set(line), FIELDS - set(line)
    plain, stream = by_id["req-plain"], by_id["req-stream"]
    assert plain["level"] == "info" and plain["status"] == 200 and plain["error"] is None
    assert (plain["route"], plain["target"], plain["provider"], plain["model"]) == \
        ("support", "gpt-4o-mini", "fake", "gpt-4o-mini")
    assert plain["cache"] == "bypass" and plain["stream"] is False and plain["ttft_ms"] is None
    assert plain["prompt_tokens"] == 9 and plain["completion_tokens"] == 7    # as the fake upstream counts
    assert plain["cost_usd"] == pytest.approx((9 * 0.15 + 7 * 0.60) / 1e6)
    assert plain["key"] == "team-a"
    assert 0 < plain["upstream_ms"] <= plain["latency_ms"]
    assert stream["stream"] is True and 0 < stream["ttft_ms"] <= stream["latency_ms"]
    assert stream["prompt_tokens"] == 9 and stream["completion_tokens"] == 7  # the stripped usage chunk
    assert by_id["req-401"]["status"] == 401 and by_id["req-401"]["error"] == "invalid_api_key"
    assert by_id["req-401"]["level"] == "warning"
    assert by_id["req-404"]["error"] == "model_not_found" and by_id["req-404"]["route"] is None
    assert by_id["req-500"]["level"] == "error" and by_id["req-500"]["upstream_errors"] == ["fake:http_5xx"]

    for secret in (PROVIDER_KEY, GATEWAY_KEY, WRONG_KEY):
        assert secret not in out and secret not in err
    assert "bluebird" not in out and "bluebird" not in err  # no message content by default


def test_log_level_and_content_switch(serve, upstream):
    gw = serve(config(upstream, log={"level": "warning", "content": True}))
    assert ask(gw.url, GATEWAY_KEY, PLAN, temperature=0).status_code == 200   # info: not written
    assert ask(gw.url, GATEWAY_KEY, PLAN, model="nope").status_code == 404
    upstream.set(error_status=503, error_times=1)
    assert ask(gw.url, GATEWAY_KEY, "second question").status_code == 503
    lines, out, err = gw.stop()
    assert [line["status"] for line in lines] == [404, 503]
    assert [line["level"] for line in lines] == ["warning", "error"]
    assert lines[0]["messages"] == [{"role": "user", "content": PLAN}]
    assert lines[1]["messages"] == [{"role": "user", "content": "second question"}]
    for secret in (PROVIDER_KEY, GATEWAY_KEY):
        assert secret not in out and secret not in err


def test_content_logged_when_asked(serve, upstream):
    gw = serve(config(upstream, log={"content": True}))
    assert ask(gw.url, GATEWAY_KEY, PLAN, temperature=0).status_code == 200
    assert ask(gw.url, GATEWAY_KEY, PLAN, temperature=0, stream=True).status_code == 200  # a hit
    lines, out, err = gw.stop()
    assert [line["cache"] for line in lines] == ["miss", "hit-exact"]
    for line in lines:
        assert line["messages"] == [{"role": "user", "content": PLAN}]
        assert line["answer"] == f"Echo: {PLAN}"
    assert GATEWAY_KEY not in out and PROVIDER_KEY not in out


def test_content_logged_has_pii_masked(serve, upstream):
    gw = serve(config(upstream, log={"content": True}))
    text = "card 4111 1111 1111 1111, mail jo@example.com, 身份证 11010519491231002X"
    assert ask(gw.url, GATEWAY_KEY, text).status_code == 200
    [line], out, _ = gw.stop()
    assert line["messages"] == [{"role": "user", "content": "card <CREDIT_CARD_1>, mail <EMAIL_1>, 身份证 <CN_ID_1>"}]
    assert line["answer"] == "Echo: card <CREDIT_CARD_1>, mail <EMAIL_1>, 身份证 <CN_ID_1>"
    for secret in ("4111 1111 1111 1111", "jo@example.com", "11010519491231002X"):
        assert secret not in out


def test_model_is_the_config_name_and_upstream_model_what_was_sent(serve, upstream):
    # `model` means the same in the log as in the metric labels: the name under `models:`.
    models = {"fast": {"provider": "fake", "name": "vendor/fast-model-v2", "input_per_1m": 0.1, "output_per_1m": 0.2}}
    gw = serve(config(upstream, models=models, routes={"support": {"targets": ["fast"]}}))
    assert ask(gw.url, GATEWAY_KEY, PLAN).status_code == 200
    assert upstream.seen[-1].body["model"] == "vendor/fast-model-v2"
    scraped = text_string_to_metric_families(httpx.get(gw.url + "/metrics", timeout=10).text)
    labelled = [s.labels["model"] for f in scraped for s in f.samples if s.name == "gateway_requests_total"]
    assert labelled == ["fast"]
    lines, _, _ = gw.stop()
    assert (lines[0]["model"], lines[0]["target"], lines[0]["upstream_model"]) == ("fast", "fast", "vendor/fast-model-v2")
    assert lines[0]["cache_bypass"] == "temperature is not 0"


# ---- every request accounted for ------------------------------------------------------------


def test_a_model_not_found_line_names_the_model_asked_for(serve, upstream):
    gw = serve(config(upstream))
    assert ask(gw.url, GATEWAY_KEY, PLAN, model="no-such-model").status_code == 404
    lines, _, _ = gw.stop()
    (line,) = [entry for entry in lines if entry.get("event") == "request"]
    assert line["requested_model"] == "no-such-model" and line["error"] == "model_not_found"
    assert line["route"] is None and line["status"] == 404


def test_the_prompt_version_the_tools_called_and_allowed_metadata_are_in_the_line(serve, upstream):
    gw = serve(config(upstream, log={"metadata_keys": ["ticket", "team"]}))
    tools = [{"type": "function", "function": {"name": "order_status", "parameters": {"type": "object"}}}]
    metadata = {"ticket": "T-42", "customer_email": "jo@example.com", "prompt_version": "support-v3"}
    assert ask(gw.url, GATEWAY_KEY, "where?", headers={"x-request-id": "req-tools"}, tools=tools,
               metadata=metadata).status_code == 200
    assert ask(gw.url, GATEWAY_KEY, "where?", headers={"x-request-id": "req-tools-stream",
                                                       "x-gateway-prompt-version": "support-v4"},
               tools=tools, stream=True).status_code == 200
    assert ask(gw.url, GATEWAY_KEY, "hi", headers={"x-request-id": "req-plain"}).status_code == 200
    lines, _, _ = gw.stop()
    by_id = {line["request_id"]: line for line in lines}
    tools_line = by_id["req-tools"]
    assert tools_line["prompt_version"] == "support-v3" and tools_line["tool_calls"] == ["order_status"]
    assert tools_line["metadata"] == {"ticket": "T-42"}   # the allow-list only: never the email
    assert "jo@example.com" not in str(lines)
    stream_line = by_id["req-tools-stream"]   # the header wins; a stream's tool calls are named too
    assert stream_line["prompt_version"] == "support-v4" and stream_line["tool_calls"] == ["order_status"]
    assert "metadata" not in stream_line
    plain = by_id["req-plain"]
    assert plain["prompt_version"] is None and plain["tool_calls"] == []


def test_unknown_paths_are_logged_and_counted(serve, upstream):
    gw = serve(config(upstream))
    assert httpx.post(gw.url + "/v1/chat/completion", json={}).status_code == 404          # a typo
    assert httpx.get(gw.url + "/v1/chat/completions").status_code == 405                   # the wrong method
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'gateway_requests_total{cache="bypass",endpoint="unknown",model="none",provider="none",route="none",status="4xx"} 2.0' in metrics
    lines, _, _ = gw.stop()
    paths = {entry["path"]: entry for entry in lines if entry.get("endpoint") == "unknown"}
    assert paths["POST /v1/chat/completion"]["status"] == 404
    assert paths["POST /v1/chat/completion"]["error"] == "unknown_path"
    assert paths["GET /v1/chat/completions"]["error"] == "method_not_allowed"
    assert all(entry["route"] is None and entry["request_id"] for entry in paths.values())


def test_reloads_are_json_events_with_the_file_and_the_problems(serve, upstream, tmp_path):
    cfg = config(upstream, admin={"key": "sk-admin", "watch": False})
    gw = serve(cfg)
    path = tmp_path / "gateway.yaml"
    admin = {"authorization": "Bearer sk-admin"}
    cfg["routes"]["faq"] = {"targets": ["gpt-4o-mini"]}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert httpx.post(gw.url + "/admin/reload", headers=admin).json()["status"] == "reloaded"
    broken = yaml.safe_dump(cfg, sort_keys=False).replace("    targets:", "    targetz:", 1)
    path.write_text(broken)
    assert httpx.post(gw.url + "/admin/reload", headers=admin).status_code == 422
    lines, out, err = gw.stop()
    events = [entry for entry in lines if entry.get("event") == "config_reload"]
    ok = [e for e in events if e["result"] == "success"]
    refused = [e for e in events if e["result"] == "failure"]
    assert ok and ok[0]["path"] == str(path) and ok[0]["level"] == "info" and ok[0]["changed"] is True
    assert ok[0]["providers_kept"] == ["fake"]
    assert ok[0]["trigger"] == "POST /admin/reload"
    assert refused and refused[0]["level"] == "error" and refused[0]["path"] == str(path)
    line = broken.splitlines().index("    targetz:") + 1
    assert any(p.startswith(f"{path}:{line}: unknown key 'targetz'") for p in refused[0]["problems"])
    assert all(text.startswith("{") for text in out.splitlines() if text.strip())   # JSON lines only
    assert "targetz" not in err                      # nothing of it as plain text on stderr either


def test_a_cancelled_stream_is_counted_and_priced(serve, upstream):
    upstream.set(chunk_delay_s=0.2, reply="one two three four five six seven eight nine ten")
    gw = serve(config(upstream))
    with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=10,
                      headers={"authorization": f"Bearer {GATEWAY_KEY}"},
                      json={"model": "support", "stream": True, "messages": [{"role": "user", "content": PLAN}]}) as r:
        received = b""
        for part in r.iter_bytes():
            received += part
            if received.count(b"data: {") >= 3:
                break                                   # the client leaves after a few chunks
    deadline = time.monotonic() + 10
    while "client_left" not in gw.stdout_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    metrics = httpx.get(gw.url + "/metrics").text
    families = {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(metrics) for s in f.samples}
    estimated = {dict(k[1]).get("kind"): v for k, v in families.items() if k[0] == "gateway_tokens_estimated_total"}
    assert estimated.get("prompt", 0) >= 1 and estimated.get("completion", 0) >= 1
    cost = sum(v for k, v in families.items() if k[0] == "gateway_cost_usd_total")
    assert cost > 0
    lines, _, _ = gw.stop()
    (line,) = [entry for entry in lines if entry.get("client_left")]
    assert line["tokens_estimated"] is True and line["prompt_tokens"] >= 1 and line["completion_tokens"] >= 1
    assert line["cost_usd"] > 0
