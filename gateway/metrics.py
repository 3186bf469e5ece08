"""The gateway's Prometheus metrics: definitions on a per-app registry, the collector that renders
them (and reads live state: limiters, cache sizes, circuit state, latency quantiles) at scrape time,
and `/metrics`.

Names, labels and units are a contract (README "Metrics"): seconds and USD as base units, labels
of low cardinality only (route, model, provider, cache layer, status class). Per-key labels exist
only on the separate `gateway_key_*` family, and only when `metrics.per_key_labels` is on.

Per request the observer only adds to plain dicts keyed by label tuples (no lock, no label
validation: `finish` and the scrape both run on the event loop); prometheus-client's metric
families turn them into the exposition when Prometheus asks.

A scrape renders a `Snapshot`: this process's figures, or under `gateway serve --workers N` the
merge of every worker's (gateway/workers.py carries them between workers at scrape time), so the
per-request path is the same either way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol

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

log = logging.getLogger("gateway.metrics")

# Whole requests: 1 ms to 120 s (a long stream), roughly 1-2.5-5 per decade.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
                    60.0, 120.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
# The gateway's own time is sub-millisecond when all is well: resolve 100 us.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)
QUEUE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

QUANTILES = (0.5, 0.95, 0.99)
CACHE_LAYERS = ("exact", "semantic", "embeddings")
STATE_PARTS = ("keys", "slots")
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

    def sketch(self, now: float) -> DDSketch | None:
        """The live slots merged into a new sketch; None when nothing happened within the window."""
        oldest = int(now / self.slot_s) - WINDOW_SLOTS + 1
        while self._slots and self._slots[0][0] < oldest:
            self._slots.popleft()
        if not self._slots:
            return None
        merged = DDSketch(SKETCH_ACCURACY)
        for _, sketch in self._slots:
            merged.merge(sketch)
        return merged


class CounterVec:
    """A counter family: label values -> value. Callers add with `values[key] = values.get(key, 0) + n`."""

    __slots__ = ("name", "doc", "labels", "values")

    def __init__(self, name: str, doc: str, labels: tuple[str, ...]):
        self.name, self.doc, self.labels = name, doc, labels
        self.values: dict[tuple[str, ...], float] = {}

    def family(self, values: dict[tuple[str, ...], float] | None = None) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in (self.values if values is None else values).items():
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

    def family(self, values: dict[tuple[str, ...], list[float]] | None = None) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for key, counts in (self.values if values is None else values).items():
            total = 0
            buckets = []
            for le, count in zip(self._le, counts):
                total += count
                buckets.append((le, total))
            family.add_metric(key, buckets, counts[-1])
        return family


# ---- snapshots: what a scrape renders, and what crosses between workers ----------------------

# Counted once per model in each worker: the run counts it once too.
MAX_MERGED = frozenset({"gateway_unpriced_models_total"})
CPU = "process_cpu_seconds"
# How the workers' process_* figures add up, and what they then mean (README "Metrics").
PROCESS_MERGED: dict[str, tuple[Callable[[Iterable[float]], float], str]] = {
    "process_virtual_memory_bytes": (sum, "Virtual memory size in bytes, summed over the workers."),
    "process_resident_memory_bytes": (sum, "Resident memory size in bytes, summed over the workers."),
    "process_start_time_seconds": (min, "Start time of the oldest worker since unix epoch in seconds."),
    CPU: (sum, "Total user and system CPU time spent in seconds, summed over the workers (stopped ones "
               "included)."),
    "process_open_fds": (max, "Open file descriptors of the worker that holds the most."),
    "process_max_fds": (min, "Maximum number of open file descriptors of one worker."),
}


@dataclass
class Snapshot:
    """One process's figures at one moment, or the sum of several processes' (`merge`). Plain values
    and DDSketches, so that it pickles: under --workers it is what a worker sends the one answering
    a scrape (gateway/workers.py)."""

    values: dict[str, dict[tuple[str, ...], Any]]  # family -> label values -> a count, or bucket counts then sum
    in_flight: dict[str, float] = field(default_factory=dict)    # provider -> calls holding a slot
    queue_depth: dict[str, float] = field(default_factory=dict)  # provider -> calls waiting for one
    healthy: dict[str, bool] = field(default_factory=dict)       # target -> its circuit is closed
    entries: dict[str, tuple[int, bool]] = field(default_factory=dict)  # layer -> (entries, shared backend)
    windows: dict[str, DDSketch] = field(default_factory=dict)   # route -> the quantile window's sketch
    process: dict[str, float] = field(default_factory=dict)      # process_* family -> value
    workers: int = 1        # live processes whose figures these are
    unanswered: int = 0     # workers missing from a scrape, as counted by the workers that answered

    def counts_only(self) -> "Snapshot":
        """What a worker leaves behind when it stops: its counters and histograms (and CPU time),
        which the run's totals keep; its gauges stop with it."""
        process = {CPU: self.process[CPU]} if CPU in self.process else {}
        return Snapshot(self.values, process=process, workers=0, unanswered=self.unanswered)


def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """The figures of several processes as one: counts, histograms, in-flight and queue summed;
    a target healthy only while it is healthy in every process; quantile sketches merged (merging
    DDSketches loses nothing: the result is the sketch of all the requests, within the same 1%);
    cache entries summed per process, or one figure for a backend every process shares (Redis, a
    Qdrant server)."""
    out = Snapshot({}, workers=0)
    process: dict[str, list[float]] = {}
    for s in snapshots:
        for name, values in s.values.items():
            into = out.values.setdefault(name, {})
            highest = name in MAX_MERGED
            for key, value in values.items():
                have = into.get(key)
                if have is None:
                    into[key] = list(value) if isinstance(value, list) else value
                elif isinstance(value, list):
                    for i, v in enumerate(value):
                        have[i] += v
                else:
                    into[key] = max(have, value) if highest else have + value
        for mine, theirs in ((out.in_flight, s.in_flight), (out.queue_depth, s.queue_depth)):
            for name, value in theirs.items():
                mine[name] = mine.get(name, 0) + value
        for target, ok in s.healthy.items():
            out.healthy[target] = out.healthy.get(target, True) and ok
        for layer, (count, shared) in s.entries.items():
            have = out.entries.get(layer)
            if have is not None:
                count = max(have[0], count) if shared else have[0] + count
            out.entries[layer] = (count, shared)
        for route, sketch in s.windows.items():
            merged = out.windows.get(route)
            if merged is None:
                merged = out.windows[route] = DDSketch(SKETCH_ACCURACY)
            merged.merge(sketch)
        for name, value in s.process.items():
            process.setdefault(name, []).append(value)
        out.workers += s.workers
        out.unanswered += s.unanswered
    out.process = {name: PROCESS_MERGED[name][0](values) for name, values in process.items() if name in PROCESS_MERGED}
    return out


class Peers(Protocol):
    """The other workers of a `gateway serve --workers N` run (gateway/workers.py)."""

    pid: int

    async def gather(self) -> tuple[list[Snapshot], int]:
        """The other workers' snapshots (live, or their last counts when they did not answer in
        time), the stopped workers' counts, and how many live workers did not answer."""

    def keep(self, snapshot: Snapshot) -> bytes:
        """Keep this worker's snapshot as its last counts (what stands in for it if it dies)."""


class Metrics:
    """Every metric the gateway exports, on its own registry (never the process-wide default one,
    so two apps in one process never collide)."""

    def __init__(self, live: Callable[[], Runtime | None], quantile_window_s: float = 60.0):
        C, H = CounterVec, HistogramVec
        self.requests = C("gateway_requests_total", "Requests answered, by route, the model and provider that "
                          "answered, status class (2xx..5xx), cache result (hit-exact, hit-semantic, miss, bypass) "
                          "and endpoint (chat, embeddings, messages).",
                          ("route", "model", "provider", "status", "cache", "endpoint"))
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
        self.tokens = C("gateway_tokens_total", "Tokens of upstream answers (prompt, completion, and cached and "
                        "cache_write: the parts of prompt the provider read from and wrote to its prompt cache).", ("model", "provider", "kind"))
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
        self.guardrails = C("gateway_guardrail_events_total", "Guardrail rules that fired, by rule, stage (input, "
                            "output) and action (mask, block, flag): once per request, stage and rule.",
                            ("rule", "stage", "action"))
        self.reloads = C("gateway_config_reloads_total", "Config reload attempts by result.", ("result",))
        self.cache_requests = C("gateway_cache_requests_total", "Cache lookups per layer by result: hit, miss, bypass "
                                "(not consulted for this request), error (the backend failed; served as a miss); "
                                "the embeddings layer counts input items.",
                                ("layer", "result"))
        self.state_errors = C("gateway_state_errors_total", "Calls to the state backend (Redis) that failed or "
                              "timed out, by part (keys: the keys' rpm, tpm and budget; slots: the providers' "
                              "global concurrency slots); state.on_error said what the request got.", ("part",))
        self.key_requests = C("gateway_key_requests_total", "Requests per gateway key (only with "
                              "metrics.per_key_labels).", ("key", "status"))
        self.key_tokens = C("gateway_key_tokens_total", "Upstream tokens per gateway key (only with "
                            "metrics.per_key_labels).", ("key", "kind"))
        self.key_cost = C("gateway_key_cost_usd_total", "USD spent per gateway key (only with "
                          "metrics.per_key_labels).", ("key",))
        self.families: tuple[CounterVec | HistogramVec, ...] = (
            self.requests, self.duration, self.ttft, self.upstream, self.overhead, self.queue_wait, self.tokens,
            self.tokens_estimated, self.cost, self.saved, self.unpriced, self.rejected, self.upstream_errors,
            self.fallbacks, self.reloads, self.cache_requests, self.state_errors, self.key_requests, self.key_tokens,
            self.key_cost, self.guardrails,
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
        # Under `gateway serve --workers N` (N > 1): the other workers, asked at each scrape. None
        # otherwise, and then a scrape is this process's figures alone.
        self.peers: Peers | None = None
        self.unanswered = 0
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds,
        # process_start_time_seconds...: what every Prometheus client exports (read from /proc, at
        # scrape time; absent where there is no /proc). Rendered by the collector, after the
        # gateway's own, so that under --workers they can be the workers' sum.
        self.process = ProcessCollector(registry=None)
        self.collector = Collector(self, live)
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)

    def window(self, route: str) -> SlidingQuantiles:
        w = self.windows.get(route)
        if w is None:
            w = self.windows[route] = SlidingQuantiles(self.quantile_window_s)
        return w

    def set_quantile_window(self, window_s: float) -> None:
        if window_s != self.quantile_window_s:
            self.quantile_window_s = window_s
            self.windows = {}

    async def read_entries(self, runtime: Runtime, timeout_s: float = 1.0) -> None:
        try:  # Redis or Qdrant being slow must not stall the scrape
            async with asyncio.timeout(timeout_s):
                self.cache_entries = await runtime.cache.entries()
        except Exception:
            self.cache_entries = {}

    def snapshot(self, runtime: Runtime | None) -> Snapshot:
        """This process's figures now (the cache entries as `read_entries` last read them). The
        dicts are the live ones, not copies: render or pickle it before the next await."""
        return self.collector.snapshot(runtime)

    async def exposition(self, runtime: Runtime, accept: str | None) -> tuple[bytes, str]:
        if self.peers is None:
            await self.read_entries(runtime)
            snapshot = self.snapshot(runtime)
        else:  # the other workers are asked while this one reads its cache backends: 1 s at most
            _, (theirs, unanswered) = await asyncio.gather(self.read_entries(runtime), self.peers.gather())
            self.unanswered += unanswered
            mine = self.snapshot(runtime)
            self.peers.keep(mine)  # what this scrape exports of this worker, should it die next
            try:
                snapshot = merge([mine, *theirs])
            except Exception:  # e.g. a worker still on the code before a rolling restart
                log.exception("could not add up the workers' figures; this scrape has this worker's only")
                snapshot = mine
        self.collector.prepared = snapshot
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class Collector:
    """Renders a snapshot of the counted families and of the gauges read from live state when
    Prometheus scrapes: this process's, or under --workers every worker's merged."""

    def __init__(self, metrics: Metrics, live: Callable[[], Runtime | None]):
        self.metrics = metrics
        self.live = live
        self.prepared: Snapshot | None = None  # what `Metrics.exposition` gathered for this scrape
        # Backend error counters restart with a new backend (a reload that changes the cache
        # config); keep what the previous ones counted so the exported counter never goes down.
        self._error_base = {layer: 0 for layer in (*CACHE_LAYERS, *STATE_PARTS)}
        self._error_last: dict[str, tuple[int, int]] = {}  # layer -> (id(backend), last count)

    def describe(self) -> Iterable[Metric]:
        """The families (the registry checks their names against other collectors')."""
        return [f.family() for f in self.metrics.families] + list(self._gauges())

    def snapshot(self, runtime: Runtime | None) -> Snapshot:
        m = self.metrics
        values: dict[str, dict[tuple[str, ...], Any]] = {f.name: f.values for f in m.families}
        snapshot = Snapshot(values)
        if runtime is not None:
            # The cache's "error" results are the backends' own counters, added at scrape time.
            cache = runtime.cache
            cache_requests = values[m.cache_requests.name] = dict(m.cache_requests.values)
            cache_requests[("exact", "error")] += self._errors("exact", cache.store, cache.store.errors)
            semantic = cache.semantic
            errors = semantic.stats["errors"] if semantic is not None else 0
            cache_requests[("semantic", "error")] += self._errors("semantic", semantic, errors)
            embeddings = cache.embeddings.store
            cache_requests[("embeddings", "error")] += self._errors("embeddings", embeddings, embeddings.errors)
            leases = runtime.leases
            values[m.state_errors.name] = {
                ("keys",): self._errors("keys", runtime.quota, runtime.quota.errors),
                ("slots",): self._errors("slots", leases, leases.errors if leases is not None else 0)}
            for name, provider in runtime.providers.items():
                snapshot.in_flight[name] = provider.limiter.in_flight
                snapshot.queue_depth[name] = provider.limiter.queued
            snapshot.healthy = runtime.health.snapshot()
            settings = runtime.config.cache
            shared = {"exact": settings.exact.backend == "redis", "semantic": bool(settings.semantic.qdrant.url),
                      "embeddings": settings.exact.backend == "redis"}
            for layer, value in m.cache_entries.items():
                if value is not None and value >= 0:
                    snapshot.entries[layer] = (value, shared.get(layer, False))
        now = time.perf_counter()  # the clock the observer adds with (CLOCK_MONOTONIC: one for all workers)
        for route, window in list(m.windows.items()):
            sketch = window.sketch(now)
            if sketch is not None:
                snapshot.windows[route] = sketch
        for family in m.process.collect():
            if family.samples:
                snapshot.process[family.name] = family.samples[0].value
        snapshot.unanswered = m.unanswered
        return snapshot

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        snapshot, self.prepared = self.prepared, None
        if snapshot is None:  # a collect that did not come through `Metrics.exposition`
            snapshot = self.snapshot(self.live())
        families = [f.family(snapshot.values.get(f.name, {})) for f in m.families]
        in_flight, queue_depth, healthy, entries, quantiles = self._gauges()
        for name, value in snapshot.in_flight.items():
            in_flight.add_metric([name], value)
        for name, value in snapshot.queue_depth.items():
            queue_depth.add_metric([name], value)
        for target, ok in snapshot.healthy.items():
            healthy.add_metric([target], 1.0 if ok else 0.0)
        for layer, (value, _) in snapshot.entries.items():
            entries.add_metric([layer], value)
        for route, sketch in snapshot.windows.items():
            for q in QUANTILES:
                quantiles.add_metric([str(q), route], sketch.get_quantile_value(q))
        families += [in_flight, queue_depth, healthy, entries, quantiles]
        if m.peers is None:
            families += m.process.collect()
        else:
            families += self._workers(snapshot)
        return iter(families)

    @staticmethod
    def _workers(snapshot: Snapshot) -> list[Metric]:
        workers = GaugeMetricFamily("gateway_workers", "Workers that answered this scrape (the one it reached "
                                    "included).", value=snapshot.workers)
        unanswered = CounterMetricFamily("gateway_workers_unanswered_total", "Times a worker did not answer a "
                                         "scrape within 1 s (its counts as of its last scrape stood in).",
                                         value=snapshot.unanswered)
        process = []
        for name, (_, doc) in PROCESS_MERGED.items():
            if name in snapshot.process:
                kind = CounterMetricFamily if name == CPU else GaugeMetricFamily
                process.append(kind(name, doc, value=snapshot.process[name]))
        return [workers, unanswered, *process]

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
    observer = request.app.state.observer
    body, content_type = await observer.exposition(runtime, request.headers.get("accept"))
    headers = {"content-type": content_type}
    peers = observer.metrics.peers
    if peers is not None:  # under --workers: which worker gathered the figures
        headers["x-gateway-worker"] = str(peers.pid)
    return Response(body, headers=headers)
