"""/metrics after real traffic: exact counts, tokens and cost to the cent, live gauges, the token.

Two providers on two fake upstreams; prices chosen so that every token is a tenth of a cent or
more, so a wrong count shows up in the cost sums.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import httpx
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .conftest import eventually
from .fake_upstream import FakeUpstream, free_port

# USD per token: small 0.001 in / 0.002 out, big 0.003 / 0.006, embed 0.0005 in.
PRICES = {"small": (1000.0, 2000.0), "big": (3000.0, 6000.0)}


@pytest.fixture(scope="module")
def upstream_b() -> Iterator[FakeUpstream]:
    fake = FakeUpstream(name="b").start()
    yield fake
    fake.stop()


@pytest.fixture
def two(upstream: FakeUpstream, upstream_b: FakeUpstream) -> tuple[FakeUpstream, FakeUpstream]:
    upstream_b.reset()
    return upstream, upstream_b


def two_provider_config(a: FakeUpstream, b: FakeUpstream, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "providers": {
            "alpha": {"base_url": a.url, "api_key": "sk-alpha-secret", "max_concurrency": 8, "timeout_s": 10},
            "beta": {"base_url": b.url, "api_key": "sk-beta-secret", "max_concurrency": 8, "timeout_s": 10},
        },
        "models": {
            "small": {"provider": "alpha", "input_per_1m": 1000, "output_per_1m": 2000},
            "big": {"provider": "beta", "input_per_1m": 3000, "output_per_1m": 6000},
            "free": {"provider": "alpha"},  # no prices: costs 0, counted once as unpriced
            "embed": {"provider": "beta", "input_per_1m": 500},
        },
        "routes": {"support": {"targets": ["small", "big"]}, "premium": {"targets": ["big"]}},
    }
    cfg.update(overrides)
    return cfg


class Scrape:
    """A /metrics page parsed with prometheus-client's own text parser."""

    def __init__(self, text: str):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels` (0 if none)."""
        return sum(s.value for s in self.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def series(self, name: str, **labels: str) -> list[dict[str, str]]:
        return [s.labels for s in self.samples
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def scrape(gw: Any, token: str | None = None) -> Scrape:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(gw.url + "/metrics", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return Scrape(r.text)


def settled(gw: Any, requests: int) -> Scrape:
    """The scrape once every request has been observed (the observer runs after the last byte)."""
    got: list[Scrape] = []

    def done() -> bool:
        got.append(scrape(gw))
        return got[-1].value("gateway_requests_total") >= requests

    assert eventually(done), f"expected {requests} requests, /metrics has {got[-1].value('gateway_requests_total')}"
    return got[-1]


def cost(model: str, prompt: int, completion: int) -> float:
    inp, out = PRICES[model]
    return (prompt * inp + completion * out) / 1e6


def chat(http: httpx.Client, model: str, text: str, **body: Any) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": text}],
                                                    **body})


def sse_events(raw: str) -> list[Any]:
    return [orjson.loads(line[6:]) for line in raw.split("\n")
            if line.startswith("data: ") and line != "data: [DONE]"]


def test_scripted_mix_counts_and_costs_exactly(start_gateway, two):
    a, b = two
    gw = start_gateway(two_provider_config(a, b))
    http = gw.http()
    # The fake upstream counts words + 3 per message as prompt tokens and echoes "Echo: <text>".
    # A: an exact-cache miss, then two hits (temperature 0 is what the exact cache serves).
    answers = [chat(http, "support", "hello world", temperature=0) for _ in range(3)]
    assert [r.headers["x-gateway-cache"] for r in answers] == ["miss", "hit-exact", "hit-exact"]
    assert answers[0].headers["x-gateway-cost-usd"] == "0.01100000"          # 5 x 0.001 + 3 x 0.002
    assert answers[1].headers["x-gateway-cost-usd"] == "0.00000000"
    # B: the same question streamed is a hit too.
    hit_stream = chat(http, "support", "hello world", temperature=0, stream=True)
    assert hit_stream.headers["x-gateway-cache"] == "hit-exact"
    # C: two streams that did not ask for usage: they get none, yet their tokens are counted.
    for _ in range(2):
        r = chat(http, "premium", "tell me more please", stream=True)
        events = sse_events(r.text)
        assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]) \
            == "Echo: tell me more please"
        assert not [e for e in events if e.get("usage") or not e["choices"]]
        assert b.seen[-1].body["stream_options"] == {"include_usage": True}  # asked upstream anyway
    # D: a stream that asked for usage gets it.
    r = chat(http, "premium", "tell me more please", stream=True, stream_options={"include_usage": True})
    usage = [e["usage"] for e in sse_events(r.text) if e.get("usage")]
    assert usage == [{"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}]
    # E: alpha fails once with a 500; the route falls back to big on beta.
    a.set(error_status=500, error_times=1)
    r = chat(http, "support", "fail over")
    assert r.status_code == 200 and r.headers["x-gateway-target"] == "big"
    # F: beta fails with a 503 on a route with one target: the client gets the 503.
    b.set(error_status=503, error_times=1)
    assert chat(http, "premium", "no luck").status_code == 503
    # G: an unknown model.
    assert chat(http, "nope", "hi").status_code == 404
    # H: a model without prices, twice.
    assert chat(http, "free", "hi").status_code == 200
    assert chat(http, "free", "hi").status_code == 200
    # I: embeddings ("a b c" is 3 tokens to the fake upstream).
    assert http.post("/v1/embeddings", json={"model": "embed", "input": "a b c"}).status_code == 200

    m = settled(gw, 13)
    req = "gateway_requests_total"
    assert m.value(req) == 13
    assert m.value(req, route="support", model="small", provider="alpha", status="2xx", cache="miss") == 1
    assert m.value(req, route="support", model="small", provider="none", status="2xx", cache="hit-exact") == 3
    assert m.value(req, route="premium", model="big", provider="beta", status="2xx", cache="bypass") == 3
    assert m.value(req, route="support", model="big", provider="beta", status="2xx", cache="bypass") == 1
    assert m.value(req, route="premium", model="big", provider="beta", status="5xx", cache="bypass") == 1
    assert m.value(req, route="none", status="4xx") == 1
    assert m.value(req, route="free", model="free", provider="alpha", status="2xx") == 2
    assert m.value(req, route="embed", model="embed", provider="beta", status="2xx") == 1

    # Latency: every request once in the histogram; TTFT for the four streams.
    assert m.value("gateway_request_duration_seconds_count") == 13
    assert m.value("gateway_request_duration_seconds_count", stream="true") == 4
    assert m.value("gateway_request_duration_seconds_bucket", le="+Inf") == 13
    assert m.value("gateway_time_to_first_token_seconds_count") == 4
    assert m.value("gateway_time_to_first_token_seconds_count", cache="hit-exact") == 1
    assert m.value("gateway_overhead_seconds_count") == 13
    assert m.value("gateway_upstream_duration_seconds_count", provider="alpha", model="small") == 1
    assert m.value("gateway_upstream_duration_seconds_count", provider="beta", model="big") == 5
    assert m.value("gateway_upstream_duration_seconds_count", provider="beta", model="embed") == 1
    for q in ("0.5", "0.95", "0.99"):
        assert m.value("gateway_request_duration_quantile_seconds", quantile=q, route="support") > 0

    # Cache: 3 exact hits, 1 miss, 7 chat requests that were not cacheable (temperature not 0).
    cache = "gateway_cache_requests_total"
    assert m.value(cache, layer="exact", result="hit") == 3
    assert m.value(cache, layer="exact", result="miss") == 1
    assert m.value(cache, layer="exact", result="bypass") == 7
    assert m.value(cache, layer="exact", result="error") == 0
    assert m.value(cache, layer="semantic") == 0  # the semantic layer is off
    assert m.value("gateway_cache_entries", layer="exact") == 1

    # Tokens: upstream answers only (hits spend none).
    tok = "gateway_tokens_total"
    assert m.value(tok, model="small", provider="alpha", kind="prompt") == 5
    assert m.value(tok, model="small", provider="alpha", kind="completion") == 3
    assert m.value(tok, model="big", provider="beta", kind="prompt") == 3 * 7 + 5
    assert m.value(tok, model="big", provider="beta", kind="completion") == 3 * 5 + 3
    assert m.value(tok, model="free", provider="alpha", kind="prompt") == 2 * 4
    assert m.value(tok, model="embed", provider="beta", kind="prompt") == 3
    assert m.value("gateway_tokens_estimated_total") == 0

    # Cost spent and saved, to the cent and well beyond.
    spent = "gateway_cost_usd_total"
    assert m.value(spent, model="small", provider="alpha") == pytest.approx(cost("small", 5, 3), abs=1e-9)
    assert m.value(spent, model="big", provider="beta") == pytest.approx(
        3 * cost("big", 7, 5) + cost("big", 5, 3), abs=1e-9)                           # 0.153 + 0.033
    assert m.value(spent, model="embed", provider="beta") == pytest.approx(3 * 0.0005, abs=1e-9)
    assert m.value(spent, model="free") == 0
    assert round(m.value(spent), 2) == 0.20                                             # 0.2005
    assert m.value("gateway_cost_saved_usd_total", model="small") == pytest.approx(3 * cost("small", 5, 3), abs=1e-9)
    assert m.value("gateway_unpriced_models_total") == 1
    assert m.value("gateway_unpriced_models_total", model="free") == 1

    # Upstream failures and the fallback.
    assert m.value("gateway_upstream_errors_total", provider="alpha", kind="http_5xx") == 1
    assert m.value("gateway_upstream_errors_total", provider="beta", kind="http_5xx") == 1
    assert m.value("gateway_upstream_errors_total") == 2
    assert m.value("gateway_fallbacks_total", route="support") == 1
    assert m.value("gateway_fallbacks_total") == 1
    assert m.value("gateway_upstream_rejected_total") == 0

    # Live gauges at rest.
    assert m.value("gateway_upstream_in_flight", provider="alpha") == 0
    assert m.value("gateway_upstream_queue_depth", provider="beta") == 0
    assert m.value("gateway_target_healthy", target="big") == 1
    # No per-key labels unless the config turns them on.
    assert not [s for s in m.samples if "key" in s.labels]


def test_live_gauges_and_queue_rejections(start_gateway, two):
    a, b = two
    cfg = two_provider_config(a, b)
    cfg["providers"]["alpha"].update(max_concurrency=1, max_queue=1, queue_timeout_s=5)
    gw = start_gateway(cfg)
    a.set(latency_s=0.6)
    results: list[int] = []

    def call() -> None:
        with gw.http() as http:
            results.append(chat(http, "free", "slow one").status_code)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    busy = scrape(gw)
    assert busy.value("gateway_upstream_in_flight", provider="alpha") == 1
    assert busy.value("gateway_upstream_queue_depth", provider="alpha") == 1
    assert busy.value("gateway_upstream_in_flight", provider="beta") == 0
    with gw.http() as http:
        rejected = chat(http, "free", "one too many")
    assert rejected.status_code == 429
    for t in threads:
        t.join()
    assert sorted(results) == [200, 200]

    m = settled(gw, 3)
    assert m.value("gateway_upstream_rejected_total", provider="alpha", reason="queue_full") == 1
    assert m.value("gateway_upstream_errors_total") == 0  # a refusal is not an upstream error
    assert m.value("gateway_requests_total", status="4xx") == 1
    assert m.value("gateway_upstream_in_flight", provider="alpha") == 0
    assert m.value("gateway_upstream_queue_depth", provider="alpha") == 0
    # The second request waited for the first one's slot: queue wait, not overhead.
    assert m.value("gateway_upstream_queue_wait_seconds_sum", provider="alpha") >= 0.2
    assert m.value("gateway_upstream_queue_wait_seconds_count", provider="alpha") == 3
    assert m.value("gateway_overhead_seconds_sum") < 0.3
    assert m.value("gateway_upstream_duration_seconds_sum", provider="alpha") >= 1.0


def test_stream_timing_counts_the_provider_until_the_last_chunk(start_gateway, two):
    a, b = two
    gw = start_gateway(two_provider_config(a, b))
    a.set(latency_s=0.3, chunk_delay_s=0.1, reply="one two three")
    with gw.http() as http:
        assert chat(http, "free", "go", stream=True).status_code == 200
    m = settled(gw, 1)
    ttft = m.value("gateway_time_to_first_token_seconds_sum")
    total = m.value("gateway_request_duration_seconds_sum")
    upstream = m.value("gateway_upstream_duration_seconds_sum")
    assert 0.3 <= ttft < total
    assert total >= 0.6
    assert upstream >= 0.6 and total - upstream < 0.2  # the provider's time to headers counts as upstream
    assert m.value("gateway_overhead_seconds_sum") < 0.2


def test_broken_stream_is_an_upstream_error(start_gateway, two):
    a, b = two
    gw = start_gateway(two_provider_config(a, b))
    a.set(broken_after=1, reply="one two three")
    with gw.http() as http:
        r = chat(http, "free", "go", stream=True)
    assert '"upstream_stream_error"' in r.text
    m = settled(gw, 1)
    assert m.value("gateway_upstream_errors_total", provider="alpha", kind="broken_stream") == 1
    assert m.value("gateway_upstream_errors_total") == 1


def test_metrics_token(start_gateway, two):
    a, b = two
    gw = start_gateway(two_provider_config(a, b, metrics={"token": "scrape-me"}))
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic scrape-me"}):
        r = httpx.get(gw.url + "/metrics", headers=headers)
        assert r.status_code == 401
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert "gateway_requests" in scrape(gw, token="scrape-me").families


def test_quantiles_cover_a_sliding_window(start_gateway, two):
    a, b = two
    gw = start_gateway(two_provider_config(a, b, metrics={"quantile_window_s": 0.6}))
    a.set(latency_s=0.05)
    with gw.http() as http:
        for i in range(5):
            chat(http, "free", f"q{i}")
    m = settled(gw, 5)
    p50, p95, p99 = (m.value("gateway_request_duration_quantile_seconds", quantile=q, route="free")
                     for q in ("0.5", "0.95", "0.99"))
    assert 0.045 <= p50 <= p95 <= p99 < 1.0
    time.sleep(0.8)
    assert scrape(gw).series("gateway_request_duration_quantile_seconds", route="free") == []


def test_per_key_labels_only_when_turned_on(start_gateway, two):
    a, b = two
    keys = {"keys": [{"name": "team-a", "key": "gw-key-a"}, {"name": "team-b", "key": "gw-key-b"}]}
    gw = start_gateway(two_provider_config(a, b, auth=keys, metrics={"per_key_labels": True}))
    with gw.http(headers={"authorization": "Bearer gw-key-a"}) as http:
        chat(http, "support", "x")
        chat(http, "support", "y")
    with gw.http(headers={"authorization": "Bearer gw-key-b"}) as http:
        chat(http, "support", "z")
    m = settled(gw, 3)
    assert m.value("gateway_key_requests_total", key="team-a", status="2xx") == 2
    assert m.value("gateway_key_requests_total", key="team-b") == 1
    assert m.value("gateway_key_cost_usd_total", key="team-a") == pytest.approx(2 * cost("small", 4, 2), abs=1e-9)
    assert "gw-key-a" not in m.text and "gw-key-b" not in m.text


def test_request_id_and_trace_context_reach_the_upstream(start_gateway, two):
    a, b = two
    gw = start_gateway(two_provider_config(a, b))
    trace = {"x-request-id": "req-42", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
             "tracestate": "vendor=opaque"}
    with gw.http(headers=trace) as http:
        r = chat(http, "premium", "trace me")
    assert r.headers["x-request-id"] == "req-42"
    seen = b.seen[-1].headers
    for name, value in trace.items():
        assert seen[name] == value


def test_reloads_and_circuits_through_the_real_routing(start_gateway, two):
    a, b = two
    cfg = two_provider_config(a, b, admin={"key": "admin-key", "watch": False},
                              health={"failures_to_open": 2, "cooldown_s": 60})
    gw = start_gateway(cfg)
    admin = {"authorization": "Bearer admin-key"}
    m = scrape(gw)
    assert m.value("gateway_config_reloads_total", result="success") == 0
    assert m.value("gateway_config_reloads_total", result="failure") == 0
    assert m.value("gateway_target_healthy", target="big") == 1
    with gw.http() as http:
        assert chat(http, "premium", "before").status_code == 200
        # A valid edit: a new route, and the metrics settings of the new config take over.
        cfg["routes"]["extra"] = {"targets": ["big"]}
        cfg["metrics"] = {"quantile_window_s": 30}
        gw.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        assert http.post("/admin/reload", headers=admin).status_code == 200
        gw.config_path.write_text("providers: [this is not a mapping\n")
        assert http.post("/admin/reload", headers=admin).status_code != 200
        assert chat(http, "extra", "after").status_code == 200
        # Two failures in a row open the circuit of `big`.
        b.set(error_status=500)
        for _ in range(2):
            assert chat(http, "premium", "failing").status_code == 500
    m = settled(gw, 4)
    assert m.value("gateway_config_reloads_total", result="success") == 1
    assert m.value("gateway_config_reloads_total", result="failure") == 1
    assert m.value("gateway_requests_total", route="premium") == 3  # counting went on across the reload
    assert m.value("gateway_requests_total", route="extra") == 1
    assert gw.app.state.observer.metrics.quantile_window_s == 30
    assert m.value("gateway_target_healthy", target="big") == 0
    assert m.value("gateway_target_healthy", target="small") == 1


def test_two_apps_in_one_process_keep_their_own_registries(start_gateway, two):
    a, b = two
    one = start_gateway(two_provider_config(a, b))
    other = start_gateway(two_provider_config(a, b))
    with one.http() as http:
        chat(http, "free", "only here")
    assert settled(one, 1).value("gateway_requests_total") == 1
    assert scrape(other).value("gateway_requests_total") == 0


def test_cache_backend_errors_are_counted(start_gateway, two):
    a, b = two
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: every Redis call fails
    gw = start_gateway(two_provider_config(a, b, cache={"exact": {"backend": "redis", "redis_url": nobody,
                                                                  "timeout_ms": 200, "cooldown_s": 0}}))
    with gw.http() as http:
        for _ in range(2):
            r = chat(http, "support", "still answered", temperature=0)
            assert r.status_code == 200 and r.headers["x-gateway-cache"] == "miss"
    m = settled(gw, 2)
    assert m.value("gateway_cache_requests_total", layer="exact", result="miss") == 2
    assert m.value("gateway_cache_requests_total", layer="exact", result="error") >= 2
    assert m.series("gateway_cache_entries", layer="exact") == []  # unknown while Redis is down


def test_semantic_layer_counts_and_embedding_spend(start_gateway, two):
    a, b = two
    cfg = two_provider_config(a, b, cache={"exact": {"max_entries": 1},
                                           "semantic": {"enabled": True,
                                                        "embedder": {"kind": "openai", "model": "embed"}}})
    cfg["routes"]["support"]["cache"] = {"semantic": True}
    gw = start_gateway(cfg)
    with gw.http() as http:
        # The exact layer holds one entry, so asking the first question again misses it and the
        # semantic layer (same text, same vector) answers.
        for n, (route, text, served) in enumerate([("support", "alpha question", "miss"),
                                                   ("support", "beta question", "miss"),
                                                   ("support", "alpha question", "hit-semantic"),
                                                   ("premium", "gamma question", "miss")], 1):
            assert chat(http, route, text, temperature=0).headers["x-gateway-cache"] == served
            settled(gw, n)  # the answer is stored before the next question
    m = settled(gw, 4)
    cache = "gateway_cache_requests_total"
    assert m.value(cache, layer="exact", result="miss") == 4
    assert m.value(cache, layer="semantic", result="miss") == 2
    assert m.value(cache, layer="semantic", result="hit") == 1
    assert m.value(cache, layer="semantic", result="bypass") == 1  # premium does not use the layer
    assert m.value(cache, layer="semantic", result="error") == 0
    assert m.value("gateway_requests_total", cache="hit-semantic", model="small") == 1
    assert m.value("gateway_cache_entries", layer="exact") == 1
    assert m.value("gateway_cost_saved_usd_total", model="small") == pytest.approx(cost("small", 5, 3), abs=1e-9)
    # The embedder's calls to `embed` on beta are spent too, at its price.
    embedded = m.value("gateway_tokens_total", model="embed", provider="beta", kind="prompt")
    assert embedded >= 2  # at least the dimension probe
    assert m.value("gateway_cost_usd_total", model="embed", provider="beta") == pytest.approx(embedded * 0.0005)



class NoUsageUpstream(FakeUpstream):
    """A provider that never reports usage, in JSON answers or in streams."""

    def _usage(self, body: dict[str, Any], text: str) -> Any:
        return None


def test_tokens_are_estimated_when_the_provider_reports_none(start_gateway, upstream_b):
    quiet = NoUsageUpstream(name="quiet").start()
    try:
        gw = start_gateway(two_provider_config(quiet, upstream_b))
        with gw.http() as http:
            assert chat(http, "support", "hello there friend").status_code == 200
            streamed = chat(http, "support", "hello there friend", stream=True)
            assert not [e for e in sse_events(streamed.text) if not e["choices"]]
        m = settled(gw, 2)
    finally:
        quiet.stop()
    # About 4 characters a token: "hello there friend" is 4, "Echo: hello there friend" is 6.
    for name in ("gateway_tokens_total", "gateway_tokens_estimated_total"):
        assert m.value(name, model="small", provider="alpha", kind="prompt") == 2 * 4
        assert m.value(name, model="small", provider="alpha", kind="completion") == 2 * 6
    assert m.value("gateway_cost_usd_total", model="small") == pytest.approx(2 * cost("small", 4, 6), abs=1e-9)


def test_process_metrics_as_every_prometheus_client_exports(start_gateway, two):
    gw = start_gateway(two_provider_config(*two))
    first = scrape(gw)
    assert first.value("process_resident_memory_bytes") > 50 * 2**20
    assert first.value("process_open_fds") > 0
    assert abs(first.value("process_start_time_seconds") - time.time()) < 24 * 3600
    assert first.value("process_cpu_seconds_total") > 0
