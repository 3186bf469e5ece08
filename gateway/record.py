"""What one request did, filled in as it passes through the pipeline and read once when it ends.

The pipeline never records metrics or logs on the hot path: it sets fields here, and the
observer (`gateway/observe.py`) turns the finished record into metrics and one log line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    # "chat" | "embeddings" | "unknown" (a path the gateway does not serve) | "other" (a failure
    # of another endpoint: /v1/models, /admin/..., /metrics)
    endpoint: str
    started: float = field(default_factory=time.perf_counter)
    stream: bool = False
    tenant: str | None = None           # gateway key name (or a hash of the client's token)
    requested_model: str | None = None  # the `model` the client asked for (a route or model name)
    route: str | None = None
    model: str | None = None            # the target model (config name) that answered
    provider: str | None = None
    status: int = 0
    cache: str = "bypass"               # hit-exact | hit-semantic | miss | bypass (embeddings: hit-embeddings | partial)
    cache_layers: dict[str, str] = field(default_factory=dict)  # layer -> hit | miss (layers consulted)
    cache_items: dict[str, int] | None = None   # embeddings: input items by result (hit, miss, bypass)
    coalesced: bool = False             # answered by an identical request's upstream call
    similarity: float | None = None     # semantic hits
    first_byte_s: float | None = None   # streams: when the first byte went to the client (perf_counter)
    upstream_s: float = 0.0             # time spent waiting on providers (all attempts)
    queue_wait_s: float = 0.0
    usage: dict[str, Any] | None = None  # the OpenAI usage object of the answer
    usage_estimated: bool = False
    retries: int = 0
    fallbacks: list[str] = field(default_factory=list)   # one reason per fallback taken
    # Every failed attempt: (provider, kind) with kind timeout | connect | invalid | queue_full |
    # queue_timeout | http_429 | http_5xx | http_4xx.
    upstream_errors: list[tuple[str, str]] = field(default_factory=list)
    baseline_model: str | None = None   # routing: the model that would otherwise have answered
    error_kind: str | None = None       # timeout | connect | invalid | upstream_4xx | ...
    stream_error: str | None = None     # a stream that began and then failed: timeout | broken_stream
    saved_model: str | None = None      # cache hits: the model whose call was saved
    cost_usd: float = 0.0               # what this request paid upstream (0 for a hit)
    cache_bypass: str | None = None     # why the cache was not consulted ("temperature is not 0", ...)
    client_left: bool = False           # a stream whose client disconnected before its end
    # Cascade: one "model:reason" per answer checked and rejected, and what those answers cost.
    escalations: list[str] = field(default_factory=list)
    escalation_cost_usd: float = 0.0
    ended: float | None = None          # when the last byte went to the client (perf_counter), if known
    # Semantic hits: (model, usage) of the judge calls the lookup made, taken off the hit's saving.
    judge_usage: list[tuple[str, dict[str, Any]]] | None = None
    keep_answer: bool = False           # log.content is on: the answer must be read even when not cached
    messages: Any = None                # the request's messages (embeddings: input); logged only with log.content
    answer: dict[str, Any] | None = None  # the completion answered; logged only with log.content
    path: str | None = None             # endpoint "unknown" or "other": the method and path asked for
    client_request_id: str | None = None  # the client's x-request-id when not usable as the id (logged only)
    prompt_version: str | None = None   # x-gateway-prompt-version, else metadata.prompt_version
    trace: Any = None                   # the request's span (gateway/tracing.py), when tracing is on
    guardrails: tuple[tuple[str, str, str], ...] = ()   # (stage, rule, action) that fired
    metadata: dict[str, Any] | None = None  # the request's metadata keys that log.metadata_keys allows
    admission: Any = None               # what the key's limits lent this request (quota.Admission), settled at the end
    # (model, usage) of the semantic layer's own calls for this request (embeddings, judge
    # verdicts), hit or miss: charged to the key's budget.
    cache_spend: list[tuple[str, dict[str, Any]]] | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started
