"""The gateway's Prometheus metrics: definitions on a per-app registry, the collector that renders
them (and reads live state: limiters, cache sizes, circuit state, latency quantiles) at scrape time,
and `/metrics`.

Names, labels and units are a contract (README "Metrics"): seconds and USD as base units, labels
of low cardinality only (route, model, provider, cache layer, status class). Per-key labels exist
only on the separate `gateway_key_*` family, and only when `metrics.per_key_labels` is on.

Per request the observer only adds to plain dicts keyed by label tuples (no lock, no label
validation: `finish` and the scrape both run on the event loop); prometheus-client's metric
families turn them into the exposition when Prometheus asks.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections import deque
from typing import Any, Callable, Iterable, Iterator

from ddsketch import DDSketch
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString
from starlette.requests import Request
from starlette.responses import Response

from .auth import bearer_token, presents
from .errors import GatewayError
from .runtime import Runtime


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


class CounterVec:
    """A counter family: label values -> value. Callers add with `values[key] = values.get(key, 0) + n`."""

    __slots__ = ("name", "doc", "labels", "values")

    def __init__(self, name: str, doc: str, labels: tuple[str, ...]):
        self.name, self.doc, self.labels = name, doc, labels
        self.values: dict[tuple[str, ...], float] = {}

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in self.values.items():
            family.add_metric(key, value)
        return family


class HistogramVec:
    """A histogram family: label values -> per-bucket counts (not cumulative) then the sum."""

    __slots__ = ("name", "doc", "labels", "bounds", "values", "_le")

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], bounds: tuple[float, ...]):
        self.name, self.doc, self.labels, self.bounds = name, doc, labels, bounds
        self.values: dict[tuple[str, ...], list[float]] = {}
        self._le = [floatToGoString(b) for b in bounds] + ["+Inf"]

    def observe(self, key: tuple[str, ...], value: float) -> None:
        counts = self.values.get(key)
        if counts is None:
            counts = self.values[key] = [0] * (len(self.bounds) + 1) + [0.0]
        counts[bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value
        counts[-1] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for key, counts in self.values.items():
            total = 0
            buckets = []
            for le, count in zip(self._le, counts):
                total += count
                buckets.append((le, total))
            family.add_metric(key, buckets, counts[-1])
        return family


class Metrics:
    """Every metric the gateway exports, on its own registry (never the process-wide default one,
    so two apps in one process never collide)."""

    def __init__(self, live: Callable[[], Runtime | None], quantile_window_s: float = 60.0):
        C, H = CounterVec, HistogramVec
        self.requests = C("gateway_requests_total", "Requests answered, by route, the model and provider that "
                          "answered, status class (2xx..5xx) and cache result (hit-exact, hit-semantic, miss, bypass).",
                          ("route", "model", "provider", "status", "cache"))
        self.duration = H("gateway_request_duration_seconds", "Whole request as the client sees it, from the request "
                          "to its last byte.", ("route", "cache", "stream"), DURATION_BUCKETS)
        self.ttft = H("gateway_time_to_first_token_seconds", "Streams: from the request to the first chunk sent to "
                      "the client.", ("route", "cache"), TTFT_BUCKETS)
        self.upstream = H("gateway_upstream_duration_seconds", "Time spent on provider calls per request (all "
                          "attempts; a stream counts until its last chunk).", ("provider", "model"), DURATION_BUCKETS)
        self.overhead = H("gateway_overhead_seconds", "The gateway's own time per request: total minus upstream "
                          "time minus queue wait.", ("route", "cache"), OVERHEAD_BUCKETS)
        self.queue_wait = H("gateway_upstream_queue_wait_seconds", "Time a request waited for a provider "
                            "concurrency slot.", ("provider",), QUEUE_BUCKETS)
        self.tokens = C("gateway_tokens_total", "Tokens of upstream answers (prompt, completion, and cached: the part "
                        "of prompt the provider served from its prompt cache).", ("model", "provider", "kind"))
        self.tokens_estimated = C("gateway_tokens_estimated_total", "The part of gateway_tokens_total that was "
                                  "estimated from text (the provider sent no usage).", ("model", "provider", "kind"))
        self.cost = C("gateway_cost_usd_total", "USD spent upstream (answers, semantic-cache embeddings and judge "
                      "calls), from the config's prices.", ("model", "provider"))
        self.saved = C("gateway_cost_saved_usd_total", "USD not spent thanks to cache hits and cheaper routing, priced "
                       "at the model that would otherwise have answered (net of judge calls).", ("model",))
        self.unpriced = C("gateway_unpriced_models_total", "Models that answered without prices in the config "
                          "(counted once per model; their cost is 0).", ("model",))
        self.rejected = C("gateway_upstream_rejected_total", "Provider calls refused by the gateway's own limiter "
                          "(reason: queue_full, queue_timeout).", ("provider", "reason"))
        self.upstream_errors = C("gateway_upstream_errors_total", "Failed provider attempts (kind: timeout, connect, "
                                 "invalid, http_429, http_5xx, http_4xx, broken_stream).", ("provider", "kind"))
        self.fallbacks = C("gateway_fallbacks_total", "Moves to a route's next target, by the reason the previous one "
                           "failed.", ("route", "reason"))
        self.reloads = C("gateway_config_reloads_total", "Config reload attempts by result.", ("result",))
        self.cache_requests = C("gateway_cache_requests_total", "Cache lookups per layer by result: hit, miss, bypass "
                                "(not consulted for this request), error (the backend failed; served as a miss).",
                                ("layer", "result"))
        self.key_requests = C("gateway_key_requests_total", "Requests per gateway key (only with "
                              "metrics.per_key_labels).", ("key", "status"))
        self.key_tokens = C("gateway_key_tokens_total", "Upstream tokens per gateway key (only with "
                            "metrics.per_key_labels).", ("key", "kind"))
        self.key_cost = C("gateway_key_cost_usd_total", "USD spent per gateway key (only with "
                          "metrics.per_key_labels).", ("key",))
        self.families: tuple[CounterVec | HistogramVec, ...] = (
            self.requests, self.duration, self.ttft, self.upstream, self.overhead, self.queue_wait, self.tokens,
            self.tokens_estimated, self.cost, self.saved, self.unpriced, self.rejected, self.upstream_errors,
            self.fallbacks, self.reloads, self.cache_requests, self.key_requests, self.key_tokens, self.key_cost,
        )
        for result in ("success", "failure"):
            self.reloads.values[(result,)] = 0
        # Counted per request; the "error" results come from the backends' own counters at scrape time.
        self.cache_counts = self.cache_requests.values
        for layer in CACHE_LAYERS:
            for result in CACHE_RESULTS:
                self.cache_counts[(layer, result)] = 0
        self.quantile_window_s = quantile_window_s
        self.windows: dict[str, SlidingQuantiles] = {}
        self.cache_entries: dict[str, int | None] = {}
        self.registry = CollectorRegistry()
        self.registry.register(Collector(self, live))
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds,
        # process_start_time_seconds...: what every Prometheus client exports (read from /proc, at
        # scrape time; absent where there is no /proc). Under --workers, the worker that answered.
        ProcessCollector(registry=self.registry)

    def window(self, route: str) -> SlidingQuantiles:
        w = self.windows.get(route)
        if w is None:
            w = self.windows[route] = SlidingQuantiles(self.quantile_window_s)
        return w

    def set_quantile_window(self, window_s: float) -> None:
        if window_s != self.quantile_window_s:
            self.quantile_window_s = window_s
            self.windows = {}

    async def exposition(self, runtime: Runtime, accept: str | None) -> tuple[bytes, str]:
        try:  # Redis or Qdrant being slow must not stall the scrape
            async with asyncio.timeout(1.0):
                self.cache_entries = await runtime.cache.entries()
        except Exception:
            self.cache_entries = {}
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class Collector:
    """Renders the counted families, and gauges read from live state when Prometheus scrapes."""

    def __init__(self, metrics: Metrics, live: Callable[[], Runtime | None]):
        self.metrics = metrics
        self.live = live
        # Backend error counters restart with a new backend (a reload that changes the cache
        # config); keep what the previous ones counted so the exported counter never goes down.
        self._error_base = {layer: 0 for layer in CACHE_LAYERS}
        self._error_last: dict[str, tuple[int, int]] = {}  # layer -> (id(backend), last count)

    def describe(self) -> Iterable[Metric]:
        """The families (the registry checks their names against other collectors')."""
        return [f.family() for f in self.metrics.families] + list(self._gauges())

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        runtime = self.live()
        in_flight, queue_depth, healthy, entries, quantiles = self._gauges()
        # The cache's "error" results are the backends' own counters, added at scrape time.
        cache_requests = CounterVec(m.cache_requests.name, m.cache_requests.doc, m.cache_requests.labels)
        cache_requests.values = dict(m.cache_requests.values)
        if runtime is not None:
            cache = runtime.cache
            cache_requests.values[("exact", "error")] += self._errors("exact", cache.store, cache.store.errors)
            semantic = cache.semantic
            errors = semantic.stats["errors"] if semantic is not None else 0
            cache_requests.values[("semantic", "error")] += self._errors("semantic", semantic, errors)
            for name, provider in runtime.providers.items():
                in_flight.add_metric([name], provider.limiter.in_flight)
                queue_depth.add_metric([name], provider.limiter.queued)
            for target, ok in runtime.health.snapshot().items():
                healthy.add_metric([target], 1.0 if ok else 0.0)
        families = [(cache_requests if f is m.cache_requests else f).family() for f in m.families]
        for layer, value in m.cache_entries.items():
            if value is not None and value >= 0:
                entries.add_metric([layer], value)
        now = time.perf_counter()  # the clock the observer adds with
        for route, window in list(m.windows.items()):
            values = window.quantiles(now)
            if values is not None:
                for q, value in zip(QUANTILES, values):
                    quantiles.add_metric([str(q), route], value)
        return iter([*families, in_flight, queue_depth, healthy, entries, quantiles])

    def _errors(self, layer: str, backend: Any, count: int) -> int:
        if backend is None:
            return self._error_base[layer] + self._error_last.get(layer, (0, 0))[1]
        last = self._error_last.get(layer)
        if last is not None and last[0] != id(backend):
            self._error_base[layer] += last[1]
        self._error_last[layer] = (id(backend), int(count))
        return self._error_base[layer] + int(count)

    @staticmethod
    def _gauges() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("gateway_upstream_in_flight", "Provider calls holding a concurrency slot now.",
                              labels=["provider"]),
            GaugeMetricFamily("gateway_upstream_queue_depth", "Requests waiting for a provider concurrency slot now.",
                              labels=["provider"]),
            GaugeMetricFamily("gateway_target_healthy", "1 while a target's circuit is closed (calls allowed), 0 "
                              "while it is open.", labels=["target"]),
            GaugeMetricFamily("gateway_cache_entries", "Entries in each cache layer.", labels=["layer"]),
            GaugeMetricFamily("gateway_request_duration_quantile_seconds", "Request duration quantiles over the "
                              "last metrics.quantile_window_s seconds (DDSketch, 1% relative accuracy).",
                              labels=["quantile", "route"]),
        )




async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: the Prometheus exposition; a bearer token is required when metrics.token is set."""
    runtime: Runtime = request.app.state.runtime
    token = runtime.config.metrics.token
    if token is not None:
        given = request.headers.get("authorization")
        if not presents(given, token):
            raise GatewayError(401, "A valid bearer token is required for /metrics." if bearer_token(given) else
                               "Missing bearer token in the Authorization header.",
                               "invalid_request_error", "invalid_api_key")
    body, content_type = await request.app.state.observer.exposition(runtime, request.headers.get("accept"))
    return Response(body, headers={"content-type": content_type})
