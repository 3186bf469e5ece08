"""The gateway's Prometheus metrics: definitions on a per-app registry, the collector that reads
live state (limiters, cache sizes, circuit state, latency quantiles) at scrape time, and `/metrics`.

Names, labels and units are a contract (README "Metrics"): seconds and USD as base units, labels
of low cardinality only (route, model, provider, cache layer, status class). Per-key labels exist
only on the separate `gateway_key_*` family, and only when `metrics.per_key_labels` is on.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from ddsketch import DDSketch
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response

from .errors import GatewayError

if TYPE_CHECKING:
    from .runtime import Runtime

# `_created` series double the number of series and nobody graphs them; this process exports
# nothing else through prometheus-client, so the library-wide switch is ours to flip.
disable_created_metrics()

# Whole requests: 1 ms to 120 s (a long stream), roughly 1-2.5-5 per decade.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
                    60.0, 120.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
# The gateway's own time is sub-millisecond when all is well: resolve 100 us.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)
QUEUE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

QUANTILES = (0.5, 0.95, 0.99)
CACHE_LAYERS = ("exact", "semantic")
CACHE_RESULTS = ("hit", "miss", "bypass", "error")
WINDOW_SLOTS = 6           # the sliding window moves in steps of window / 6
SKETCH_ACCURACY = 0.01     # ddsketch relative accuracy: a reported quantile is within 1%


class SlidingQuantiles:
    """Quantiles of the last `window_s` seconds: one DDSketch per slot of window/6 seconds; a scrape
    merges the live slots. Adding a value is one sketch insert (no sorting, no sample list)."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self.slot_s = window_s / WINDOW_SLOTS
        self._slots: deque[tuple[int, DDSketch]] = deque()
        self._slot = -1
        self._sketch: DDSketch | None = None

    def add(self, value: float, now: float) -> None:
        slot = int(now / self.slot_s)
        if slot != self._slot:
            self._slot = slot
            self._sketch = DDSketch(SKETCH_ACCURACY)
            self._slots.append((slot, self._sketch))
            while self._slots[0][0] <= slot - WINDOW_SLOTS:
                self._slots.popleft()
        self._sketch.add(value)  # type: ignore[union-attr]

    def quantiles(self, now: float) -> list[float] | None:
        """None when nothing happened within the window."""
        oldest = int(now / self.slot_s) - WINDOW_SLOTS + 1
        while self._slots and self._slots[0][0] < oldest:
            self._slots.popleft()
        if not self._slots:
            return None
        merged = DDSketch(SKETCH_ACCURACY)
        for _, sketch in self._slots:
            merged.merge(sketch)
        return [merged.get_quantile_value(q) for q in QUANTILES]


class Metrics:
    """Every metric the gateway exports, on its own registry (never the process-wide default one,
    so two apps in one process never collide)."""

    def __init__(self, live: "Callable[[], Runtime | None]", quantile_window_s: float = 60.0):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("gateway_requests_total", "Requests answered, by route, the model and provider that "
                                "answered, status class (2xx..5xx) and cache result (hit-exact, hit-semantic, miss, bypass).",
                                ["route", "model", "provider", "status", "cache"], registry=r)
        self.duration = Histogram("gateway_request_duration_seconds", "Whole request as the client sees it, from the "
                                  "request to its last byte.", ["route", "cache", "stream"], registry=r,
                                  buckets=DURATION_BUCKETS)
        self.ttft = Histogram("gateway_time_to_first_token_seconds", "Streams: from the request to the first chunk "
                              "sent to the client.", ["route", "cache"], registry=r, buckets=TTFT_BUCKETS)
        self.upstream = Histogram("gateway_upstream_duration_seconds", "Time spent on provider calls per request (all "
                                  "attempts; a stream counts until its last chunk).", ["provider", "model"], registry=r,
                                  buckets=DURATION_BUCKETS)
        self.overhead = Histogram("gateway_overhead_seconds", "The gateway's own time per request: total minus "
                                  "upstream time minus queue wait.", ["route", "cache"], registry=r,
                                  buckets=OVERHEAD_BUCKETS)
        self.queue_wait = Histogram("gateway_upstream_queue_wait_seconds", "Time a request waited for a provider "
                                    "concurrency slot.", ["provider"], registry=r, buckets=QUEUE_BUCKETS)
        self.tokens = Counter("gateway_tokens_total", "Tokens of upstream answers (prompt, completion, and cached: the "
                              "part of prompt the provider served from its prompt cache).",
                              ["model", "provider", "kind"], registry=r)
        self.tokens_estimated = Counter("gateway_tokens_estimated_total", "The part of gateway_tokens_total that was "
                                        "estimated from text (the provider sent no usage).",
                                        ["model", "provider", "kind"], registry=r)
        self.cost = Counter("gateway_cost_usd_total", "USD spent upstream (answers, semantic-cache embeddings and judge "
                            "calls), from the config's prices.", ["model", "provider"], registry=r)
        self.saved = Counter("gateway_cost_saved_usd_total", "USD not spent thanks to cache hits and cheaper routing, "
                             "priced at the model that would otherwise have answered (net of judge calls).",
                             ["model"], registry=r)
        self.unpriced = Counter("gateway_unpriced_models_total", "Models that answered without prices in the config "
                                "(counted once per model; their cost is 0).", ["model"], registry=r)
        self.rejected = Counter("gateway_upstream_rejected_total", "Provider calls refused by the gateway's own "
                                "limiter (reason: queue_full, queue_timeout).", ["provider", "reason"], registry=r)
        self.upstream_errors = Counter("gateway_upstream_errors_total", "Failed provider attempts (kind: timeout, "
                                       "connect, invalid, http_429, http_5xx, http_4xx, broken_stream).",
                                       ["provider", "kind"], registry=r)
        self.fallbacks = Counter("gateway_fallbacks_total", "Moves to a route's next target, by the reason the "
                                 "previous one failed.", ["route", "reason"], registry=r)
        self.reloads = Counter("gateway_config_reloads_total", "Config reload attempts by result.", ["result"],
                               registry=r)
        self.key_requests = Counter("gateway_key_requests_total", "Requests per gateway key (only with "
                                    "metrics.per_key_labels).", ["key", "status"], registry=r)
        self.key_tokens = Counter("gateway_key_tokens_total", "Upstream tokens per gateway key (only with "
                                  "metrics.per_key_labels).", ["key", "kind"], registry=r)
        self.key_cost = Counter("gateway_key_cost_usd_total", "USD spent per gateway key (only with "
                                "metrics.per_key_labels).", ["key"], registry=r)
        for result in ("success", "failure"):
            self.reloads.labels(result)

        # gateway_cache_requests_total is counted per request here and completed at scrape time
        # with the backends' own error counters, so it is one family built by the collector.
        self.cache_counts: dict[tuple[str, str], int] = {(l, r): 0 for l in CACHE_LAYERS for r in CACHE_RESULTS}
        self.quantile_window_s = quantile_window_s
        self.windows: dict[str, SlidingQuantiles] = {}
        self.cache_entries: dict[str, int | None] = {}
        self.live = LiveCollector(self, live)
        r.register(self.live)

    def window(self, route: str) -> SlidingQuantiles:
        w = self.windows.get(route)
        if w is None:
            w = self.windows[route] = SlidingQuantiles(self.quantile_window_s)
        return w

    def set_quantile_window(self, window_s: float) -> None:
        if window_s != self.quantile_window_s:
            self.quantile_window_s = window_s
            self.windows = {}

    async def exposition(self, runtime: "Runtime", accept: str | None) -> tuple[bytes, str]:
        try:  # Redis or Qdrant being slow must not stall the scrape
            async with asyncio.timeout(1.0):
                self.cache_entries = await runtime.cache.entries()
        except Exception:
            self.cache_entries = {}
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class LiveCollector:
    """Gauges read from live state when Prometheus scrapes, never updated per request."""

    def __init__(self, metrics: Metrics, live: "Callable[[], Runtime | None]"):
        self.metrics = metrics
        self.live = live
        # Backend error counters restart with a new backend (a reload that changes the cache
        # config); keep what the previous ones counted so the exported counter never goes down.
        self._error_base = {layer: 0 for layer in CACHE_LAYERS}
        self._error_last: dict[str, tuple[int, int]] = {}  # layer -> (id(backend), last count)

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        runtime = self.live()
        families = self._families()
        cache_requests, entries, in_flight, queue_depth, healthy, quantiles = families
        counts = dict(self.metrics.cache_counts)
        if runtime is not None:
            cache = runtime.cache
            counts[("exact", "error")] += self._errors("exact", cache.store, getattr(cache.store, "errors", 0))
            semantic = cache.semantic
            stats = getattr(semantic, "stats", None) if semantic is not None else None
            errors = stats.get("errors", 0) if isinstance(stats, dict) else 0
            counts[("semantic", "error")] += self._errors("semantic", semantic, errors)
            for name, provider in runtime.providers.items():
                in_flight.add_metric([name], provider.limiter.in_flight)
                queue_depth.add_metric([name], provider.limiter.queued)
            for target, ok in _health(runtime).items():
                healthy.add_metric([target], 1.0 if ok else 0.0)
        for (layer, result), value in counts.items():
            cache_requests.add_metric([layer, result], value)
        for layer, value in self.metrics.cache_entries.items():
            if value is not None and value >= 0:
                entries.add_metric([layer], value)
        now = time.monotonic()
        for route, window in list(self.metrics.windows.items()):
            values = window.quantiles(now)
            if values is None:
                continue
            for q, value in zip(QUANTILES, values):
                quantiles.add_metric([str(q), route], value)
        return iter(families)

    def _errors(self, layer: str, backend: Any, count: int) -> int:
        if backend is None:
            return self._error_base[layer] + self._error_last.get(layer, (0, 0))[1]
        last = self._error_last.get(layer)
        if last is not None and last[0] != id(backend):
            self._error_base[layer] += last[1]
        self._error_last[layer] = (id(backend), int(count))
        return self._error_base[layer] + int(count)

    @staticmethod
    def _families() -> tuple[Any, ...]:
        return (
            CounterMetricFamily("gateway_cache_requests", "Cache lookups per layer by result: hit, miss, bypass (not "
                                "consulted for this request), error (the backend failed; served as a miss).",
                                labels=["layer", "result"]),
            GaugeMetricFamily("gateway_cache_entries", "Entries in each cache layer.", labels=["layer"]),
            GaugeMetricFamily("gateway_upstream_in_flight", "Provider calls holding a concurrency slot now.",
                              labels=["provider"]),
            GaugeMetricFamily("gateway_upstream_queue_depth", "Requests waiting for a provider concurrency slot now.",
                              labels=["provider"]),
            GaugeMetricFamily("gateway_target_healthy", "1 while a target's circuit is closed (calls allowed), 0 "
                              "while it is open.", labels=["target"]),
            GaugeMetricFamily("gateway_request_duration_quantile_seconds", "Request duration quantiles over the "
                              "last metrics.quantile_window_s seconds (DDSketch, 1% relative accuracy).",
                              labels=["quantile", "route"]),
        )


def _health(runtime: "Runtime") -> dict[str, bool]:
    """Circuit state from the routing layer's health tracker; without one no circuit ever opens."""
    health = getattr(runtime, "health", None)
    snapshot = getattr(health, "snapshot", None)
    if callable(snapshot):
        try:
            state = snapshot()
            if isinstance(state, dict):
                return {str(k): bool(v) for k, v in state.items()}
        except Exception:
            pass
    return {name: True for name in runtime.targets}


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: the Prometheus exposition; a bearer token is required when metrics.token is set."""
    runtime: Runtime = request.app.state.runtime
    token = runtime.config.metrics.token
    if token is not None:
        given = request.headers.get("authorization") or ""
        presented = given[7:].strip() if given[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(presented.encode(), token.encode()):
            raise GatewayError(401, "A valid bearer token is required for /metrics." if presented else
                               "Missing bearer token in the Authorization header.",
                               "invalid_request_error", "invalid_api_key")
    body, content_type = await request.app.state.observer.metrics.exposition(runtime, request.headers.get("accept"))
    return Response(body, headers={"content-type": content_type})
