"""Load, interpolate and validate the gateway's YAML config.

The schema lives here and only here (pydantic models, unknown keys are errors). Every problem is
reported as `PATH:LINE: message`, with the line taken from the YAML node the problem is about.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import redis_url


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    workers: int = Field(1, ge=1)
    # No auth.keys and a host other than loopback: anyone who reaches the address uses the gateway
    # (and the providers' keys). `gateway serve` refuses that unless it is meant.
    allow_open: bool = False
    # What one client may hold (gateway/server.py): the request line and headers together, their
    # number (more -> 431), the time from the connection (or a request's first byte) to the end of
    # its headers, and from there to the end of its body (longer -> 408, and the connection closed).
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    max_headers: int = Field(100, ge=1)
    header_timeout_s: float = Field(10.0, gt=0, allow_inf_nan=False)
    body_timeout_s: float = Field(60.0, gt=0, allow_inf_nan=False)
    # SIGTERM: requests and streams in flight get this long to finish; then each stream still
    # running ends with an SSE error event, and a request still waiting gets 503.
    shutdown_grace_s: float = Field(30.0, ge=0, allow_inf_nan=False)


ProviderType = Literal["openai", "azure", "anthropic", "gemini", "bedrock"]

# Where each type's API lives when `base_url` is not given (bedrock: per region).
DEFAULT_BASE_URLS = {"anthropic": "https://api.anthropic.com",
                     "gemini": "https://generativelanguage.googleapis.com"}


class ProviderConfig(_Strict):
    # The API the provider speaks (gateway/providers/): OpenAI's chat completions (any
    # OpenAI-compatible server), Azure OpenAI, Anthropic Messages, Gemini, Bedrock Converse.
    type: ProviderType = "openai"
    base_url: str = ""
    api_key: str | None = None
    # azure: the api-version of classic deployment URLs (none: Azure's v1 API); anthropic: the
    # anthropic-version header (default 2023-06-01); gemini: the API version in the path (v1beta).
    api_version: str | None = None
    region: str | None = None          # bedrock: the AWS region (base_url is then derived from it)
    # azure: how api_key is sent: Azure's `api-key` header, or `Authorization: Bearer` (an Entra ID token)
    auth: Literal["api-key", "bearer"] = "api-key"
    max_concurrency: int = Field(64, ge=1)
    max_queue: int = Field(512, ge=0)
    queue_timeout_s: float = Field(10.0, gt=0)
    timeout_s: float = Field(600.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    headers: dict[str, str] = {}
    # Streams are sent upstream with stream_options.include_usage, to count their tokens. false:
    # for an OpenAI-compatible server that rejects stream_options; the gateway sends none (the
    # client's too), and a stream's tokens are estimated from its text, marked estimated.
    stream_usage: bool = True

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _where(self) -> "ProviderConfig":
        if not self.base_url:
            if self.type == "bedrock" and self.region:
                self.base_url = f"https://bedrock-runtime.{self.region}.amazonaws.com"
            elif self.type in DEFAULT_BASE_URLS:
                self.base_url = DEFAULT_BASE_URLS[self.type]
            else:
                raise ValueError("base_url is required" + (" (or region)" if self.type == "bedrock" else ""))
        if self.type == "bedrock" and not self.region:
            found = re.match(r"https://bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com", self.base_url)
            if found is None:
                raise ValueError("a bedrock provider needs region (its requests are signed for one)")
            self.region = found.group(1)
        return self

    @field_validator("api_key")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v or None


class ModelConfig(_Strict):
    provider: str
    # The model name sent upstream; defaults to the key under `models:`.
    name: str | None = None
    input_per_1m: float | None = Field(None, ge=0)
    output_per_1m: float | None = Field(None, ge=0)
    # Prompt tokens read from the provider's prompt cache (OpenAI's cached_tokens, Anthropic's
    # cache reads); cache_read_per_1m is the same price under Anthropic's word.
    cached_input_per_1m: float | None = Field(None, ge=0)
    cache_read_per_1m: float | None = Field(None, ge=0)
    cache_write_per_1m: float | None = Field(None, ge=0)   # prompt tokens written to it (Anthropic)
    # The answer's token limit when the client sets none; Anthropic's API requires one.
    max_tokens: int | None = Field(None, ge=1)


class GuardrailConfig(_Strict):
    """One named rule of `guardrails:` (gateway/guardrails/): PII entities or patterns, and what a
    match does. Compiled (and refused with its line when it cannot be) where the config is read."""

    kind: Literal["pii", "pattern"]
    action: Literal["mask", "block", "flag"]
    entities: list[str] = []          # kind: pii
    patterns: list[str] = []          # kind: pattern (Python regular expressions)
    restore: bool = False             # mask: placeholders the model echoes are given back in the answer
    max_match: int = Field(256, ge=1, le=4096)   # pattern: the longest match a stream is checked for
    placeholder: str | None = None    # pattern: the placeholder's name (default: the rule's, in capitals)


class GuardrailsUse(_Strict):
    """The rules a route (or a key, on top) applies: by name, to the request and to the answer."""

    input: list[str] = []
    output: list[str] = []


class TargetConfig(_Strict):
    model: str
    weight: float = Field(1.0, gt=0)   # strategy: weighted


class RouteCacheConfig(_Strict):
    """Per-route cache overrides; `cache: off` on a route is the same as `{enabled: false}`."""

    enabled: bool = True
    semantic: bool = False            # semantic matching is opt-in per route
    cacheable: Literal["deterministic", "always", "never"] | None = None  # default: cache.cacheable
    ttl_s: float | None = Field(None, gt=0, allow_inf_nan=False)  # at most cache.exact.max_ttl_s
    # Answers are stored only when every choice ended with one of these (default: stop only).
    finish_reasons: list[str] = ["stop"]
    cache_n: bool = False             # also store answers of requests with n > 1


Strategy = Literal["first", "weighted", "least-busy", "latency", "cost", "cascade"]

# What an upstream attempt can end in, besides an HTTP status: the words `retry.on` and `fallback.on`
# use (the same words as the request record's `upstream_errors`).
FAILURE_KINDS = ("timeout", "connect", "invalid", "queue_full", "queue_timeout")
Condition = Union[int, Literal["timeout", "connect", "invalid", "queue_full", "queue_timeout"]]


def _conditions(values: list[Any]) -> list[Any]:
    for v in values:
        if isinstance(v, int) and not (v == 429 or 500 <= v <= 599):
            raise ValueError(f"{v}: only 429 and 5xx statuses are retried or fallen back on "
                             "(any other 4xx is the client's problem and is passed through)")
    return values


class EscalateWhen(_Strict):
    """Cascade: when an answer is not good enough and the next target is asked instead."""

    finish_reason: list[str] = ["length"]
    min_confidence: float | None = Field(None, gt=0, lt=1)  # mean token probability
    invalid_json: bool = True      # only when the request's response_format asks for JSON
    empty: bool = True             # no content and no tool calls


class RuleWhen(_Strict):
    """Every condition given must hold (AND); a rule needs at least one."""

    prompt_tokens_over: int | None = Field(None, ge=0)
    prompt_tokens_under: int | None = Field(None, ge=1)
    last_message_matches: str | None = None     # a regex, searched in the last user message
    header: dict[str, str] | None = None        # request header -> exact value
    metadata: dict[str, Union[str, int, float, bool]] | None = None  # the request's `metadata` object
    has_tools: bool | None = None
    model_requested: Union[str, list[str]] | None = None   # the `model` the client sent

    @field_validator("last_message_matches")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> "RuleWhen":
        if not self.model_fields_set:
            raise ValueError("a rule needs at least one condition")
        return self


class RuleConfig(_Strict):
    when: RuleWhen
    route: str


class RouteConfig(_Strict):
    # A route either runs targets (with a strategy), or picks another route: by `rules` (first match
    # wins) and else `default`. `routes: {gpt-4: smart}` is short for `{default: smart}`, an alias.
    targets: list[Union[str, TargetConfig]] = []
    strategy: Strategy = "first"
    rules: list[RuleConfig] = []
    default: str | None = None
    escalate_when: EscalateWhen | None = None        # strategy: cascade
    max_cost_usd: float | None = Field(None, gt=0)   # strategy: cost; per request
    over_budget: Literal["reject", "cheapest"] = "reject"  # strategy: cost, when no target fits
    prefer: Literal["cheapest", "listed"] = "cheapest"     # strategy: cost, among targets that fit
    estimated_output_tokens: int = Field(256, ge=1)  # strategy: cost, when the request has no max_tokens
    cache: RouteCacheConfig = RouteCacheConfig()
    guardrails: GuardrailsUse = GuardrailsUse()       # rules of `guardrails:` on its requests and answers

    @model_validator(mode="before")
    @classmethod
    def _alias(cls, v: Any) -> Any:
        return {"default": v} if isinstance(v, str) else v

    @field_validator("cache", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        if v is False or v == "off":
            return {"enabled": False}
        if v is True or v == "on":
            return {}
        return v

    def target_models(self) -> list[str]:
        return [t if isinstance(t, str) else t.model for t in self.targets]

    def target_weights(self) -> list[float]:
        return [1.0 if isinstance(t, str) else t.weight for t in self.targets]

    @property
    def picks_route(self) -> bool:
        """A rules or alias route: it names another route instead of running targets."""
        return bool(self.rules) or self.default is not None


class RetryConfig(_Strict):
    """Tries per target before falling back: `attempts: 1` never retries."""

    attempts: int = Field(1, ge=1, le=10)
    backoff_s: float = Field(0.2, ge=0)       # the first wait; doubles each retry, plus jitter
    max_backoff_s: float = Field(5.0, gt=0)   # no wait is longer; a longer Retry-After falls back instead
    on: list[Condition] = [429, 500, 502, 503, 504, "timeout", "connect"]

    @field_validator("on")
    @classmethod
    def _on(cls, v: list[Any]) -> list[Any]:
        return _conditions(v)


class FallbackConfig(_Strict):
    on: list[Condition] = [429, 500, 502, 503, 504, *FAILURE_KINDS]

    @field_validator("on")
    @classmethod
    def _on(cls, v: list[Any]) -> list[Any]:
        return _conditions(v)


class HealthConfig(_Strict):
    """Circuit breaker per target."""

    enabled: bool = True
    failures_to_open: int = Field(5, ge=1)   # failures in a row (each within window_s of the last)
    window_s: float = Field(30.0, gt=0)
    # Open this long, then one trial request; sooner when the failure that opened the circuit
    # carried a Retry-After (the provider's own word on when it is back).
    cooldown_s: float = Field(15.0, gt=0)


class AdminConfig(_Strict):
    key: str | None = None          # bearer key for /admin/*; unset: the admin endpoints are off
    watch: bool = True              # reload when the config file changes
    watch_interval_s: float = Field(1.0, gt=0)

    @field_validator("key")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v or None


class KeyBudget(_Strict):
    usd: float = Field(gt=0)
    period: Literal["day", "month", "total"] = "day"   # UTC days and months


class AuthKey(_Strict):
    name: str
    key: str | None = None          # the key (write it as ${ENV_VAR}, not the literal, in a shared file)
    key_sha256: str | None = None   # or its SHA-256 in hex (`gateway hash-key` prints it)
    # The route and model names it may ask for, as globs ("gpt-4o*"); unset: every one.
    models: list[str] | None = None
    rpm: int | None = Field(None, ge=1)   # requests per minute (a moving window), counted in `state:`
    tpm: int | None = Field(None, ge=1)   # tokens per minute (prompt + completion)
    budget: KeyBudget | None = None       # spend per period, from the real cost
    guardrails: GuardrailsUse = GuardrailsUse()   # rules applied to this key's requests, besides the route's

    @field_validator("key_sha256")
    @classmethod
    def _hex_digest(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", v):
            raise ValueError("key_sha256 must be 64 hex digits (`gateway hash-key` prints them)")
        return v.lower() if v is not None else None

    @model_validator(mode="after")
    def _one_key(self) -> "AuthKey":
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError(f"key '{self.name}': give exactly one of key and key_sha256")
        if self.key is not None and not self.key:
            raise ValueError(f"key '{self.name}': the key is empty (an unset ${{VAR}}?)")
        return self

    def digest(self) -> bytes:
        return bytes.fromhex(self.key_sha256) if self.key_sha256 else hashlib.sha256(self.key.encode()).digest()  # type: ignore[union-attr]

    def may_use(self, model: str) -> bool:
        return self.models is None or any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)


class AuthConfig(_Strict):
    # Empty list: the gateway is open and the client's own bearer token is passed through to
    # providers that have no key configured.
    keys: list[AuthKey] = []


class ExactCacheConfig(_Strict):
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    max_entries: int = Field(10000, ge=1)     # memory backend
    eviction: Literal["lru", "lfu"] = "lru"  # memory backend
    ttl_s: float = Field(3600, gt=0, allow_inf_nan=False)
    # The longest TTL an answer may get: `x-gateway-cache-ttl` asking for more is refused (400).
    max_ttl_s: int = Field(30 * 86400, ge=1, le=10 * 365 * 86400)
    timeout_ms: float = Field(50, gt=0)      # a slower Redis answer is a miss
    cooldown_s: float = Field(5, ge=0)       # after Redis is unreachable or slow, skip it this long
    lock_ms: float = Field(30000, gt=0)      # coalescing: how long a leader may hold the key
    # The lock's expiry in Redis, renewed by its live leader every third of it: a lock whose
    # leader is gone (crashed, or lost Redis before it could unlock) frees its followers this soon.
    # Unset: 2000, or 3 x timeout_ms when that is longer.
    lock_lease_ms: float = Field(None, gt=0)  # type: ignore[assignment]  # set by _bounds

    @model_validator(mode="after")
    def _bounds(self) -> "ExactCacheConfig":
        if self.ttl_s > self.max_ttl_s:
            if "ttl_s" in self.model_fields_set:
                raise ValueError(f"ttl_s ({self.ttl_s:g}) is above max_ttl_s ({self.max_ttl_s})")
            self.ttl_s = self.max_ttl_s
        if self.lock_lease_ms is None:
            self.lock_lease_ms = max(2000.0, 3 * self.timeout_ms)
        elif self.lock_lease_ms <= 1.5 * self.timeout_ms:
            raise ValueError(f"lock_lease_ms ({self.lock_lease_ms:g}) must be more than 1.5 x timeout_ms "
                             f"({self.timeout_ms:g}): a renewal, made every third of the lease, may take timeout_ms")
        return self


class QdrantConfig(_Strict):
    location: str | None = None   # ":memory:" (the default when nothing is set)
    path: str | None = None       # an embedded on-disk store
    url: str | None = None        # a Qdrant server
    api_key: str | None = None

    @field_validator("path", "url")
    @classmethod
    def _one_place(cls, v: str | None, info: Any) -> str | None:
        given = [name for name in ("location", "path") if info.data.get(name)]
        if v and given:
            raise ValueError(f"give one of location, path or url, not {given[0]} and {info.field_name}")
        return v


# The bundled multilingual model (USE Multilingual v3) under the names `embedder.model` accepts.
MULTILINGUAL_MODELS = frozenset({"multilingual", "universal-sentence-encoder-multilingual-3", "use-multilingual-v3"})


class EmbedderConfig(_Strict):
    kind: Literal["openai", "local"] = "openai"
    # openai: a model under `models:`; local: all-MiniLM-L6-v2 (bundled by the `local` extra), a
    # directory holding a sentence-transformers model, or a model already in the local HF cache.
    model: str = "text-embedding-3-small"


class JudgeConfig(_Strict):
    model: str                    # a cheap chat model under `models:`
    timeout_ms: float = Field(2000, gt=0)   # a slower verdict is a "no" (the request goes upstream)
    cache_size: int = Field(10000, ge=1)    # verdicts kept per (stored, incoming) pair


class SemanticCacheConfig(_Strict):
    enabled: bool = False
    qdrant: QdrantConfig = QdrantConfig()
    collection: str = "gateway_semantic_cache"
    embedder: EmbedderConfig = EmbedderConfig()
    # Cosine similarity a candidate needs before verification. Unset: the value calibrated with
    # the rule veto for the bundled model (README "Semantic cache"): 0.72 for all-MiniLM-L6-v2,
    # 0.80 for multilingual. Other embedders score on their own scale: run
    # scripts/calibrate_semantic.py for yours.
    threshold: float | None = Field(None, gt=0, le=1)
    top_k: int = Field(5, ge=1)
    verify: JudgeConfig | None = None
    single_turn_only: bool = True
    timeout_ms: float = Field(200, gt=0)     # Qdrant and the embedder; slower is a miss
    cooldown_s: float = Field(5, ge=0)       # after a failure, skip that backend this long
    log_interval_s: float = Field(10, gt=0)  # failures are logged at most once per interval
    sweep_interval_s: float = Field(60, gt=0)  # how often expired entries are deleted
    # Longer questions skip the layer: embedders read only the first few hundred tokens, so two
    # long prompts that differ near the end would look identical.
    max_text_chars: int = Field(500, ge=1)

    @model_validator(mode="after")
    def _calibrated_threshold(self) -> "SemanticCacheConfig":
        if self.threshold is None:
            local_multilingual = self.embedder.kind == "local" and self.embedder.model.lower() in MULTILINGUAL_MODELS
            self.threshold = 0.80 if local_multilingual else 0.72
        return self


class CacheConfig(_Strict):
    exact: ExactCacheConfig = ExactCacheConfig()
    semantic: SemanticCacheConfig = SemanticCacheConfig()
    # deterministic: only temperature 0 requests; always: any request; never: the cache is off.
    cacheable: Literal["deterministic", "always", "never"] = "deterministic"


class MetricsConfig(_Strict):
    token: str | None = None          # when set, GET /metrics needs `Authorization: Bearer <token>`
    quantile_window_s: float = Field(60, gt=0)   # gateway_request_duration_quantile_seconds looks back this far
    per_key_labels: bool = False      # also count requests, tokens and cost per gateway key (gateway_key_*)

    @field_validator("token")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v or None


class LogConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"  # request lines: info, 4xx warning, 5xx error
    content: bool = False             # put messages and answers in the request log line
    # The request's `metadata` keys copied into its log line (`metadata`), as given (strings cut
    # at 256 characters); the others never are.
    metadata_keys: list[str] = []


class TracingConfig(_Strict):
    """OpenTelemetry traces over OTLP (gateway/tracing.py); no `tracing:` section: off, at no cost."""

    endpoint: str = "http://127.0.0.1:4318"   # OTLP/HTTP (spans to /v1/traces); grpc:// or grpcs:// for gRPC
    service_name: str = "llm-gateway"
    sample_ratio: float = Field(1.0, ge=0, le=1)   # of the traces the gateway starts (a client's sampled parent is kept)
    content: bool = False   # messages and answers as span events

    @field_validator("endpoint")
    @classmethod
    def _otlp(cls, v: str) -> str:
        if not v.startswith(("http://", "https://", "grpc://", "grpcs://")):
            raise ValueError("tracing.endpoint must start with http://, https://, grpc:// or grpcs://")
        return v


class StateConfig(_Strict):
    """Where the limits' counters live: this process, or a Redis that every replica and worker shares."""

    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    timeout_ms: float = Field(50, gt=0)          # a slower Redis answer counts as an error
    on_error: Literal["allow", "deny"] = "allow"  # Redis unreachable: allow (counted, logged) | deny (503)
    lease_s: float = Field(10, gt=0)              # a global concurrency slot's lease (renewed while held)

    @field_validator("redis_url")
    @classmethod
    def _a_redis_url(cls, v: str) -> str:
        problem = redis_url.check(v)
        if problem is not None:
            raise ValueError(problem)
        return v


class GatewayConfig(_Strict):
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    providers: dict[str, ProviderConfig] = Field(min_length=1)
    models: dict[str, ModelConfig] = {}
    routes: dict[str, RouteConfig] = {}
    cache: CacheConfig = CacheConfig()
    retry: RetryConfig = RetryConfig()
    fallback: FallbackConfig = FallbackConfig()
    health: HealthConfig = HealthConfig()
    admin: AdminConfig = AdminConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()
    state: StateConfig = StateConfig()
    tracing: TracingConfig | None = None
    guardrails: dict[str, GuardrailConfig] = {}


class ConfigError(Exception):
    """A config that cannot be used; `problems` are `PATH:LINE: message` strings."""

    def __init__(self, problems: list[str]):
        problems = sorted(problems, key=_line_number)
        super().__init__("\n".join(problems))
        self.problems = problems


def _line_number(problem: str) -> int:
    m = re.search(r":(\d+): ", problem)
    return int(m.group(1)) if m else 0


@dataclass
class LoadedConfig:
    config: GatewayConfig
    path: str
    text: str
    # The line of every key and list item, by its path: ("routes", "auto", "rules", 1) -> 17.
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict)


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_Loc = tuple[Any, ...]


def _interpolate(value: str, missing: list[str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        got = os.environ.get(name)
        if got is not None and (got or default is None):
            return got
        if default is not None:
            return default
        missing.append(name)
        return ""

    return _ENV.sub(sub, value)


class _Reader:
    """Turns a composed YAML node tree into plain Python, remembering each path's line."""

    def __init__(self, path: str, loader: yaml.SafeLoader):
        self.path = path
        self.loader = loader
        self.lines: dict[_Loc, int] = {}
        self.problems: list[str] = []

    def problem(self, line: int, message: str) -> None:
        self.problems.append(f"{self.path}:{line}: {message}")

    def read(self, node: yaml.Node, loc: _Loc) -> Any:
        line = node.start_mark.line + 1
        self.lines[loc] = line
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.loader.construct_object(key_node)
                if not isinstance(key, (str, int, float, bool)):
                    self.problem(key_node.start_mark.line + 1, "mapping keys must be plain scalars")
                    continue
                # YAML 1.1 reads the keys on/off/yes/no as booleans; a key is a name here, as written
                # (`retry: {on: [429]}`).
                key = key_node.value if isinstance(key, bool) and isinstance(key_node, yaml.ScalarNode) else str(key)
                if key in out:
                    self.problem(key_node.start_mark.line + 1, f"duplicate key '{key}'")
                out[key] = self.read(value_node, loc + (key,))
                self.lines[loc + (key,)] = key_node.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.read(item, loc + (i,)) for i, item in enumerate(node.value)]
        value = self.loader.construct_object(node)
        if isinstance(value, str) and "${" in value:
            missing: list[str] = []
            value = _interpolate(value, missing)
            for name in missing:
                self.problem(line, f"environment variable {name} is not set and has no default "
                                   f"(write ${{{name}:-default}} to give one)")
        return value

    def line_of(self, loc: _Loc) -> int:
        loc = tuple(loc)
        while loc and loc not in self.lines:
            loc = loc[:-1]
        return self.lines.get(loc, 1)


def _field_names(model: type[BaseModel], seen: set[type] | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    for info in model.model_fields.values():
        for arg in _walk_types(info.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                names |= _field_names(arg, seen)
    return names


def _walk_types(tp: Any) -> list[Any]:
    out = [tp]
    for arg in getattr(tp, "__args__", ()) or ():
        out.extend(_walk_types(arg))
    return out


_TYPE_TAG = re.compile(r"^(str|int|float|bool|[A-Z]\w*|[\w-]+\[.*\])$")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    return [t for t in _walk_types(annotation) if isinstance(t, type) and issubclass(t, BaseModel)]


def _keys_at(root: type[BaseModel], loc: tuple[Any, ...]) -> set[str]:
    """The keys valid where the last part of `loc` is (fields of the section it is in): list
    indexes, names under a mapping (`providers.openai`) and pydantic's union tags are stepped over."""
    models: list[type[BaseModel]] = [root]
    for part in loc[:-1]:
        if not isinstance(part, str):
            continue
        found = [m.model_fields[part] for m in models if part in m.model_fields]
        if found:
            models = [inner for info in found for inner in _models_in(info.annotation)]
    return {name for m in models for name in m.model_fields}


def _describe(err: dict[str, Any], vocabulary: set[str], lines: dict[_Loc, int]) -> str:
    """`vocabulary`: every key of the schema, for a suggestion where the section's own keys give none."""
    # Keep the parts of the location that exist in the file; drop the type tags pydantic puts
    # into the locations of union members (a missing key is the one part not in the file).
    loc: list[Any] = []
    parts = list(err["loc"])
    for i, part in enumerate(parts):
        if tuple(loc) + (part,) in lines:
            loc.append(part)
        elif i == len(parts) - 1 and not (isinstance(part, str) and _TYPE_TAG.match(part)):
            loc.append(part)
    where = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        here = _keys_at(GatewayConfig, tuple(err["loc"]))
        hint = difflib.get_close_matches(key, sorted(here or vocabulary), n=1)
        suffix = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"unknown key '{key}'{suffix}"
    if err["type"] == "missing":
        return f"{where}: required key is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return f"{where}: {msg} (got {err.get('input')!r})"


def _cross_check(cfg: GatewayConfig, reader: _Reader) -> None:
    for name, model in cfg.models.items():
        if model.provider not in cfg.providers:
            hint = difflib.get_close_matches(model.provider, list(cfg.providers), n=1)
            reader.problem(
                reader.line_of(("models", name, "provider")),
                f"model '{name}' names provider '{model.provider}', which is not under providers:"
                + (f" (did you mean '{hint[0]}'?)" if hint else ""),
            )
    semantic = cfg.cache.semantic
    if semantic.enabled and semantic.embedder.kind == "openai" and semantic.embedder.model not in cfg.models:
        reader.problem(reader.line_of(("cache", "semantic", "embedder", "model")),
                       f"the semantic cache's embedder names model '{semantic.embedder.model}', which is not under models:")
    if semantic.verify is not None and semantic.verify.model not in cfg.models:
        reader.problem(reader.line_of(("cache", "semantic", "verify", "model")),
                       f"the semantic cache's judge names model '{semantic.verify.model}', which is not under models:")
    for name, route in cfg.routes.items():
        for i, target in enumerate(route.target_models()):
            if target not in cfg.models:
                hint = difflib.get_close_matches(target, list(cfg.models), n=1)
                reader.problem(
                    reader.line_of(("routes", name, "targets", i)),
                    f"route '{name}' names model '{target}', which is not under models:"
                    + (f" (did you mean '{hint[0]}'?)" if hint else ""),
                )
        _check_route(cfg, name, route, reader)
    _check_route_cycles(cfg, reader)
    _check_guardrails(cfg, reader)


def _check_guardrails(cfg: GatewayConfig, reader: _Reader) -> None:
    """Every rule compiles (a pattern that cannot, or that matches the empty string, is refused),
    and every name a route or key uses is a rule."""
    from .guardrails import RuleError, compile_rule   # its regex engine, only for a config that has rules

    for name, rule in cfg.guardrails.items():
        try:
            compile_rule(name, rule.model_dump(exclude_defaults=True))
        except RuleError as exc:
            reader.problem(reader.line_of(("guardrails", name)), str(exc))
    uses = [(("routes", name), route.guardrails) for name, route in cfg.routes.items()]
    uses += [(("auth", "keys", i), key.guardrails) for i, key in enumerate(cfg.auth.keys)]
    for at, use in uses:
        for stage in ("input", "output"):
            for j, rule in enumerate(getattr(use, stage)):
                if rule not in cfg.guardrails:
                    hint = difflib.get_close_matches(rule, list(cfg.guardrails), n=1)
                    reader.problem(reader.line_of(at + ("guardrails", stage, j)),
                                   f"{'.'.join(map(str, at))} uses guardrail '{rule}', which is not under guardrails:"
                                   + (f" (did you mean '{hint[0]}'?)" if hint else ""))


# Route settings that only mean something with one strategy: set with another, they are a mistake.
_STRATEGY_ONLY = {"escalate_when": "cascade", "max_cost_usd": "cost", "over_budget": "cost",
                  "prefer": "cost", "estimated_output_tokens": "cost"}


def _check_route(cfg: GatewayConfig, name: str, route: RouteConfig, reader: _Reader) -> None:
    at = ("routes", name)
    given = route.model_fields_set
    if route.picks_route:
        for key in ("targets", "strategy", "cache", *_STRATEGY_ONLY):
            if key in given:
                reader.problem(reader.line_of(at + (key,)),
                               f"route '{name}' picks another route (rules/default), so '{key}' belongs on "
                               "the route it picks")
        if route.rules and route.default is None:
            reader.problem(reader.line_of(at + ("rules",)),
                           f"route '{name}' has rules but no default: say which route takes what no rule matches")
        names = [(("rules", i, "route"), rule.route) for i, rule in enumerate(route.rules)]
        if route.default is not None:
            names.append((("default",), route.default))
        for where, picked in names:
            if picked not in cfg.routes and picked not in cfg.models:
                hint = difflib.get_close_matches(picked, [*cfg.routes, *cfg.models], n=1)
                reader.problem(reader.line_of(at + where),
                               f"route '{name}' picks route '{picked}', which is neither under routes: nor models:"
                               + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        return
    if not route.targets:
        reader.problem(reader.line_of(at + ("targets",)),
                       f"routes.{name}.targets: a route needs at least one target (or rules and a default)")
        return
    for key, strategy in _STRATEGY_ONLY.items():
        if key in given and route.strategy != strategy:
            reader.problem(reader.line_of(at + (key,)),
                           f"route '{name}': '{key}' only applies to strategy: {strategy} (the route's is {route.strategy})")
    for i, target in enumerate(route.targets):
        if isinstance(target, TargetConfig) and "weight" in target.model_fields_set and route.strategy != "weighted":
            reader.problem(reader.line_of(at + ("targets", i, "weight")),
                           f"route '{name}': 'weight' only applies to strategy: weighted (the route's is {route.strategy})")
    models = route.target_models()
    if len(set(models)) != len(models):
        reader.problem(reader.line_of(at + ("targets",)), f"route '{name}' names a target twice")
    if route.strategy == "cascade" and len(models) < 2:
        reader.problem(reader.line_of(at + ("targets",)),
                       f"route '{name}': a cascade needs at least two targets, cheapest first")
    if route.strategy == "cost":
        for i, model in enumerate(models):
            priced = cfg.models.get(model)
            if priced is not None and priced.input_per_1m is None and priced.output_per_1m is None:
                reader.problem(reader.line_of(at + ("targets", i)),
                               f"route '{name}' uses strategy: cost, but model '{model}' has no prices "
                               "(input_per_1m, output_per_1m)")


def _check_route_cycles(cfg: GatewayConfig, reader: _Reader) -> None:
    """Rules and defaults form a graph of routes; a cycle would never reach a target."""
    def picks(name: str) -> list[str]:
        route = cfg.routes.get(name)
        if route is None or not route.picks_route:
            return []
        out = [rule.route for rule in route.rules]
        return out + ([route.default] if route.default is not None else [])

    reported: set[str] = set()
    for start in cfg.routes:
        path, seen = [start], {start}
        stack = [(start, iter(picks(start)))]
        while stack:
            _, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                continue
            if child in path:
                cycle = path[path.index(child):] + [child]
                if child not in reported and child == start:
                    reported.update(cycle)
                    reader.problem(reader.line_of(("routes", start)),
                                   "routes pick each other in a cycle: " + " -> ".join(cycle))
                continue
            if child in seen:
                continue
            seen.add(child)
            path.append(child)
            stack.append((child, iter(picks(child))))


def parse_config(text: str, path: str = "<config>") -> GatewayConfig:
    """Parse YAML text into a validated config, or raise ConfigError with every problem found."""
    return _parse(text, path)[0]


def _parse(text: str, path: str) -> tuple[GatewayConfig, dict[_Loc, int]]:
    loader = yaml.SafeLoader(text)
    reader = _Reader(path, loader)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        message = f"{path}:{line}: invalid YAML: {exc.problem or exc}"
        if exc.context and exc.context_mark and exc.context_mark.line + 1 != line:
            message += f" ({exc.context} that starts at line {exc.context_mark.line + 1})"
        raise ConfigError([message]) from None
    finally:
        loader.dispose()
    if node is None:
        raise ConfigError([f"{path}:1: the config is empty"])
    data = reader.read(node, ())
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1: the config must be a mapping at the top level"])
    if reader.problems:
        raise ConfigError(reader.problems)
    try:
        cfg = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        vocabulary = _field_names(GatewayConfig)
        for err in exc.errors():
            if err["type"] == "string_type" and isinstance(err.get("input"), dict) and err["loc"][-1] == "str":
                continue  # the mapping branch of a `name | {model: ...}` union says what is wrong
            reader.problem(reader.line_of(err["loc"]), _describe(err, vocabulary, reader.lines))
        raise ConfigError(reader.problems) from None
    _cross_check(cfg, reader)
    if reader.problems:
        raise ConfigError(reader.problems)
    return cfg, reader.lines


def load_config(path: str | os.PathLike[str]) -> LoadedConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}:1: cannot read the config: {exc.strerror or exc}"]) from None
    cfg, lines = _parse(text, str(p))
    return LoadedConfig(cfg, str(p), text, lines)


def default_config_path() -> str:
    return os.environ.get("GATEWAY_CONFIG", "config/gateway.yaml")

