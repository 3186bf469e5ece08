"""Turns finished request records into metrics and log lines (off the hot path).

`finish` runs on the event loop after the client has its last byte, once per request: it only
adds to the metrics' per-label dicts and queues one JSON line for the log thread. It is given the
runtime that served the request, so a request that ends after a reload is priced with the models
it ran on. The observer outlives config reloads; its own settings (log level and content,
per-key labels, quantile window) follow the config the reloader hands it (`use`).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, TextIO

from .config import GatewayConfig, ModelConfig
from .logs import LEVELS, Figures, LineWriter, RequestLines, event_line, key_label
from .metrics import Metrics
from .pricing import cost_usd, has_prices
from .record import RequestRecord
from .runtime import Runtime
from .usage import cache_writes, token_counts


log = logging.getLogger("gateway.observe")

NONE = "none"  # label value when a request never got that far (no route, no provider)
STATUS_CLASS = tuple(f"{i}xx" for i in range(10))
QUEUE_KINDS = frozenset({"queue_full", "queue_timeout"})
INFO, WARNING, ERROR = LEVELS["info"], LEVELS["warning"], LEVELS["error"]


class Observer:
    def __init__(self, config: GatewayConfig, runtime: Callable[[], Runtime | None],
                 stream: TextIO | None = None):
        # The live runtime is read at scrape time only (gauges); requests come with their own.
        self.metrics = Metrics(runtime, config.metrics.quantile_window_s)
        self.log = LineWriter(stream)
        self.lines = RequestLines()
        self._priced: set[str] = set()
        self._unpriced: set[str] = set()  # counted once, ever
        self._embedder: Any = None
        self._embedded = 0
        self.use(config)

    def use(self, config: GatewayConfig) -> None:
        """The settings of a config that now serves new requests (at start and on each reload)."""
        self._priced = set()
        self.min_level = LEVELS[config.log.level]
        self.content = self.lines.content = config.log.content
        self.per_key = config.metrics.per_key_labels
        self.metrics.set_quantile_window(config.metrics.quantile_window_s)

    def close(self) -> None:
        self.log.close()

    # ---- per request -------------------------------------------------------------------------

    def finish(self, record: RequestRecord, runtime: Runtime) -> None:
        """Called exactly once per request, after the last byte went to the client, with the
        runtime that served it."""
        try:
            self._finish(record, runtime)
        except Exception:  # accounting must never break serving
            log.exception("could not observe request %s", record.request_id)

    def _finish(self, record: RequestRecord, runtime: Runtime) -> None:
        now = time.perf_counter()
        models = runtime.config.models
        m = self.metrics
        total = (record.ended or now) - record.started
        route = record.route or NONE
        cache = record.cache
        hit = cache[:3] == "hit"
        status = record.status
        stream_error = record.stream_error  # already among upstream_errors
        if stream_error is not None:
            # The stream began with 200 and then failed: the client got an error event instead of
            # the rest of its answer (what would have been a 502, or a 504 for a timeout, had it
            # failed before the headers), so it is counted with the server errors, not as a success.
            status_class = "5xx"
        else:
            status_class = STATUS_CLASS[status // 100] if 0 <= status < 1000 else "other"
        model = record.model or NONE
        upstream = record.provider is not None and not hit  # a provider was (or was to be) called
        provider = record.provider if upstream else NONE  # type: ignore[assignment]
        stream = record.stream

        _add(m.requests.values, (route, model, provider, status_class, cache, record.endpoint), 1)
        by_route = (route, cache)
        m.duration.observe((route, cache, "true" if stream else "false"), total)
        m.window(route).add(total, now)
        ttft = None
        if stream and record.first_byte_s is not None:
            ttft = record.first_byte_s - record.started
            m.ttft.observe(by_route, ttft)
        upstream_s, queue_s = record.upstream_s, record.queue_wait_s
        if upstream:
            if upstream_s > 0:
                m.upstream.observe((provider, model), upstream_s)
            m.queue_wait.observe((provider,), queue_s)
        overhead = total - upstream_s - queue_s
        m.overhead.observe(by_route, overhead if overhead > 0 else 0.0)

        if record.endpoint != "embeddings":   # chat completions and the other chat-like APIs
            self._count_cache(record, runtime)
        elif record.cache_items:  # embeddings: counted per input item
            counts = m.cache_counts
            for result, n in record.cache_items.items():
                counts[("embeddings", result)] += n

        # Upstream attempts that failed, limiter refusals, and a stream that broke after it began.
        failed = record.upstream_errors
        if failed:
            rejected, errors = m.rejected.values, m.upstream_errors.values
            for item in failed:
                into = rejected if item[1] in QUEUE_KINDS else errors
                into[item] = into.get(item, 0) + 1
        for reason in record.fallbacks:
            _add(m.fallbacks.values, (route, reason), 1)
        for stage, rule, action in record.guardrails:
            _add(m.guardrails.values, (rule, stage, action), 1)

        usage = record.usage if isinstance(record.usage, dict) else None
        prompt = completion = cached = written = 0
        saved = 0.0
        if usage is not None:
            prompt, completion, cached = token_counts(usage)
            written = cache_writes(usage)
            if hit:
                saved = self._hit_saving(models, record, usage)
            elif upstream:
                self._count_tokens(model, provider, prompt, completion, cached, record.usage_estimated, written)
                _add(m.cost.values, (model, provider), record.cost_usd)
                if model not in self._priced:
                    self._check_priced(models, model)
                if record.baseline_model and record.baseline_model != model:
                    saved = self._routing_saving(models, record, usage)
        if self.per_key:
            self._count_key(record, status_class, upstream and usage is not None, prompt, completion)

        level = ERROR if status >= 500 or stream_error else WARNING if status >= 400 else INFO
        if level >= self.min_level:
            config = models.get(record.model) if record.model is not None else None
            upstream_model = (config.name or record.model) if config is not None else record.model
            self.log.write(self.lines.line(record, Figures(level, total, ttft, prompt, completion, cached, written,
                                                           saved, upstream_model)))

    def _count_cache(self, record: RequestRecord, runtime: Runtime) -> None:
        counts = self.metrics.cache_counts
        layers = record.cache_layers
        for key in layers.items():
            if key in counts:
                counts[key] += 1
        # Bypassed: the plan said so, or `Cache-Control: no-cache` skipped the lookup.
        bypassed = record.cache_bypass is not None or (record.cache == "miss" and "exact" not in layers)
        if bypassed:
            counts[("exact", "bypass")] += 1
        semantic_on = runtime.cache.semantic is not None
        if semantic_on and "semantic" not in layers and (bypassed or layers.get("exact") == "miss"):
            counts[("semantic", "bypass")] += 1  # not consulted although the exact layer did not answer

    def _count_tokens(self, model: str, provider: str, prompt: int, completion: int, cached: int,
                      estimated: bool, written: int = 0) -> None:
        counts = self.metrics.tokens.values
        for kind, n in (("prompt", prompt), ("completion", completion), ("cached", cached), ("cache_write", written)):
            if n or kind in ("prompt", "completion"):
                key = (model, provider, kind)
                counts[key] = counts.get(key, 0) + n
        if estimated:
            counts = self.metrics.tokens_estimated.values
            for kind, n in (("prompt", prompt), ("completion", completion)):
                key = (model, provider, kind)
                counts[key] = counts.get(key, 0) + n

    def _count_key(self, record: RequestRecord, status_class: str, spent: bool, prompt: int,
                   completion: int) -> None:
        m = self.metrics
        label = key_label(record.tenant)
        _add(m.key_requests.values, (label, status_class), 1)
        if spent:
            _add(m.key_tokens.values, (label, "prompt"), prompt)
            _add(m.key_tokens.values, (label, "completion"), completion)
            _add(m.key_cost.values, (label,), record.cost_usd)

    def _price(self, models: dict[str, ModelConfig], model: str, usage: dict[str, Any]) -> float:
        config = models.get(model)
        self._check_priced(models, model)
        return cost_usd(config, usage) if config is not None else 0.0

    def _check_priced(self, models: dict[str, ModelConfig], model: str) -> None:
        if model in self._priced or model in self._unpriced:
            return
        config = models.get(model)
        if config is not None and has_prices(config):
            self._priced.add(model)
        else:
            self._unpriced.add(model)
            _add(self.metrics.unpriced.values, (model,), 1)

    def _hit_saving(self, models: dict[str, ModelConfig], record: RequestRecord, usage: dict[str, Any]) -> float:
        """What the cached answer would have cost, less what the judge cost to allow it."""
        model = record.saved_model or record.model or NONE
        saved = self._price(models, model, usage)
        for judge_model, judge_usage in record.judge_usage or ():
            if isinstance(judge_usage, dict):
                saved -= self._price(models, judge_model, judge_usage)
        saved = max(0.0, saved)  # a counter never goes down: a judge dearer than the answer saves 0
        _add(self.metrics.saved.values, (model,), saved)
        return saved

    def _routing_saving(self, models: dict[str, ModelConfig], record: RequestRecord, usage: dict[str, Any]) -> float:
        """Routing answered with a cheaper model than the baseline: the difference, same tokens."""
        baseline = record.baseline_model or NONE
        saved = self._price(models, baseline, usage) - record.cost_usd
        if saved <= 0:
            return 0.0
        _add(self.metrics.saved.values, (baseline,), saved)
        return saved

    # ---- scrape time and config -------------------------------------------------------------

    async def exposition(self, runtime: Runtime, accept: str | None) -> tuple[bytes, str]:
        self.count_semantic_spend(runtime)
        return await self.metrics.exposition(runtime, accept)

    def count_semantic_spend(self, runtime: Runtime) -> None:
        """The semantic cache's own upstream calls (judge verdicts, embeddings) are spent too."""
        semantic = runtime.cache.semantic
        if semantic is None:
            return
        models = runtime.config.models
        for model, usage in semantic.drain_judge_usage():
            if isinstance(usage, dict):
                self._spend(models, model, usage)
        # Only an embedder that calls a priced model (the openai kind) has usage and a target.
        embedder = semantic.embedder
        usage = getattr(embedder, "usage", None)
        target = getattr(embedder, "target", None)
        if isinstance(usage, dict) and target is not None:
            embedded = int(usage.get("prompt_tokens") or 0)
            if embedder is not self._embedder:
                self._embedder, self._embedded = embedder, 0
            if embedded > self._embedded:
                self._spend(models, target.model, {"prompt_tokens": embedded - self._embedded})
                self._embedded = embedded

    def _spend(self, models: dict[str, ModelConfig], model: str, usage: dict[str, Any]) -> None:
        config = models.get(model)
        provider = config.provider if config is not None else NONE
        prompt, completion, cached = token_counts(usage)
        self._count_tokens(model, provider, prompt, completion, cached, False)
        _add(self.metrics.cost.values, (model, provider), self._price(models, model, usage))

    def config_reloaded(self, path: str, trigger: str, ok: bool, fields: dict[str, Any]) -> None:
        """Called once per config reload attempt: counted, and one JSON line `config_reload` with the
        file, what triggered it, and the problems of a refused one (`fields`)."""
        _add(self.metrics.reloads.values, ("success" if ok else "failure",), 1)
        level = INFO if ok else ERROR
        if level >= self.min_level:
            self.log.write(event_line(self.lines.timestamp(), level, "config_reload",
                                      {"result": "success" if ok else "failure", "path": path, "trigger": trigger,
                                       **fields}))


def _add(values: dict[tuple[str, ...], float], key: tuple[str, ...], n: float) -> None:
    values[key] = values.get(key, 0) + n
