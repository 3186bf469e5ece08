"""What a loaded config becomes at run time: providers with open pools, resolved routes, keys.

The composition root: it builds on upstream/, routing/ and cache/, and none of them imports it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

from .auth import bearer_token
from .cache import Cache
from .config import AuthKey, GatewayConfig, LoadedConfig
from .errors import GatewayError
from .quota import Quota
from .routing.health import Health
from .routing.route import Route
from .routing.rules import Step
from .routing.table import RouteTable
from .tracing import Tracing
from .upstream.client import Provider
from .upstream.leases import Leases
from .upstream.target import Target


NO_RULES: tuple[list[Any], list[Any]] = ([], [])   # never changed: shared by every request without rules


class Runtime:
    def __init__(self, loaded: LoadedConfig, providers: dict[str, Provider], cache: Cache, quota: Quota,
                 leases: Leases | None = None, tracing: Tracing | None = None):
        self.loaded = loaded
        self.config: GatewayConfig = loaded.config
        self.providers = providers
        self.cache = cache
        self.quota = quota   # the keys' limits; counters keyed by key name, so they outlive a reload
        self.leases = leases  # state.backend: redis: the providers' slots counted across processes
        self.tracing = tracing   # `tracing:` set: the requests' spans, exported over OTLP
        self.max_body_bytes = self.config.server.max_body_bytes
        self.targets = _targets(self.config, providers)
        self.table = RouteTable(self.config, self.targets)
        self.routes: dict[str, Route] = self.table.routes
        self.health: Health = self.table.health   # circuit per target; `health.snapshot()` for metrics
        self.in_flight = 0   # requests that may use this runtime (counted by app.Front)
        self._keys = {k.digest(): k for k in self.config.auth.keys}
        self._key_by_name = {k.name: k for k in self.config.auth.keys}
        self._guardrails = _guardrails(self.config)   # (route, key) -> (input rules, output rules)

    def guardrails(self, route: str, key_name: str | None) -> tuple[list[Any], list[Any]]:
        """The guardrail rules (gateway/guardrails/) on a request of `route` by key `key_name`: the
        route's, then the key's own. None for most requests: nothing to do."""
        if not self._guardrails:
            return NO_RULES
        return self._guardrails.get((route, key_name)) or self._guardrails.get((route, None)) or NO_RULES

    @classmethod
    async def start(cls, loaded: LoadedConfig, previous: "Runtime | None" = None) -> "Runtime":
        """Open what the config needs. Given the runtime it replaces, providers and the cache whose
        config did not change are kept (with their pools and entries); `previous.retire()` closes
        the rest once its in-flight requests are done."""
        state = loaded.config.state
        same_state = previous is not None and previous.config.state == state
        if same_state:
            leases = previous.leases   # type: ignore[union-attr]
        else:
            leases = Leases(state.redis_url, state.timeout_ms / 1000, state.lease_s) \
                if state.backend == "redis" else None
            if leases is not None:
                await leases.open()
        providers: dict[str, Provider] = {}
        for name, cfg in loaded.config.providers.items():
            old = previous.providers.get(name) if previous and same_state else None
            if old is not None and old.config == cfg:
                providers[name] = old
            else:
                providers[name] = Provider(name, cfg, leases, state.on_error)
                providers[name].open()
        try:
            if previous is not None and _cache_carries_over(previous, loaded.config, providers):
                cache = previous.cache
            else:
                cache = await Cache.open(loaded.config.cache, _targets(loaded.config, providers))
            if same_state:
                quota = previous.quota   # type: ignore[union-attr]
            else:
                quota = Quota(state, leases.redis if leases is not None else None)
            runtime = cls(loaded, providers, cache, quota, leases, _tracing(loaded.config, previous))
        except BaseException:
            for name, provider in providers.items():  # a failed reload leaves no pool open behind it
                if previous is None or previous.providers.get(name) is not provider:
                    await provider.close()
            if leases is not None and not same_state:
                await leases.close()
            raise
        if previous is not None:
            # Circuits and latencies of targets whose model and provider did not change carry over.
            runtime.table.adopt(previous.table, [
                name for name, target in runtime.targets.items()
                if name in previous.targets and previous.targets[name].provider is target.provider
                and previous.targets[name].pricing == target.pricing])
        return runtime

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()
        await self.cache.close()
        await self.quota.close()
        if self.leases is not None:
            await self.leases.close()
        if self.tracing is not None:
            await self.tracing.close()

    async def retire(self, successor: "Runtime") -> None:
        """Close what the successor did not take over."""
        for name, provider in self.providers.items():
            if successor.providers.get(name) is not provider:
                await provider.close()
        if successor.cache is not self.cache:
            await self.cache.close()
        if successor.quota is not self.quota:
            await self.quota.close()
        if self.leases is not None and successor.leases is not self.leases:
            await self.leases.close()
        if self.tracing is not None and successor.tracing is not self.tracing:
            await self.tracing.close()

    def resolve(self, model: str, payload: dict[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, trace: list[Step] | None = None) -> Route:
        """The route that runs a request for `model`: rules applied (they may read the payload and
        headers), and a cost route's budget lowered by `x-gateway-max-cost-usd`."""
        return self.table.resolve(model, payload, headers, trace)

    @property
    def auth_required(self) -> bool:
        return bool(self._keys)

    def authenticate(self, authorization: str | None) -> str | None:
        """The name of the gateway key presented, or None when the gateway has no keys."""
        if not self._keys:
            return None
        token = bearer_token(authorization)
        key = self._keys.get(_digest(token)) if token else None
        if key is None:
            raise GatewayError(
                401, "Incorrect API key provided." if token else "Missing bearer token in the Authorization header.",
                "invalid_request_error", "invalid_api_key",
            )
        return key.name

    def key(self, key_name: str | None) -> AuthKey | None:
        return self._key_by_name.get(key_name) if key_name is not None else None

    def may_use(self, key_name: str | None, model: str) -> bool:
        """Whether the gateway key (None: no keys configured) may ask for this route or model name."""
        key = self.key(key_name)
        return key is None or key.may_use(model)

    def check_model_allowed(self, key_name: str | None, model: str) -> None:
        if not self.may_use(key_name, model):
            raise GatewayError(403, f"The key '{key_name}' may not use the model '{model}'.",
                               "invalid_request_error", "model_not_allowed", "model")


def _cache_carries_over(previous: Runtime, config: GatewayConfig, providers: dict[str, Provider]) -> bool:
    """Keep the cache (and its entries) across a reload when its config and the models are the same
    (a key names a model, not what runs behind it) and the models the cache calls itself (the
    semantic layer's embedder and judge) run on kept provider pools. Route edits and provider
    edits elsewhere (limits, timeouts) keep it: keys name the route and its targets anyway."""
    if previous.config.cache != config.cache or previous.config.models != config.models:
        return False
    semantic = config.cache.semantic
    if not semantic.enabled:
        return True
    used = [semantic.verify.model] if semantic.verify is not None else []
    if semantic.embedder.kind == "openai":
        used.append(semantic.embedder.model)
    for name in used:
        model = config.models.get(name)
        if model is None or previous.providers.get(model.provider) is not providers.get(model.provider):
            return False
    return True


def _guardrails(config: GatewayConfig) -> dict[tuple[str, str | None], tuple[list[Any], list[Any]]]:
    """The compiled rules of each route (key None) and of each route and key, where there are any."""
    if not config.guardrails:
        return {}
    from .guardrails import compile_rules   # the regex engine: only for a config that has rules

    rules = compile_rules({name: rule.model_dump(exclude_defaults=True) for name, rule in config.guardrails.items()})
    out: dict[tuple[str, str | None], tuple[list[Any], list[Any]]] = {}
    keys = [(None, [], [])] + [(k.name, k.guardrails.input, k.guardrails.output) for k in config.auth.keys]
    for route_name in dict.fromkeys([*config.routes, *config.models]):   # a model's name is a route of its own
        route = config.routes.get(route_name)
        route_in, route_out = (route.guardrails.input, route.guardrails.output) if route is not None else ([], [])
        for key_name, key_in, key_out in keys:
            names_in = list(dict.fromkeys([*route_in, *key_in]))
            names_out = list(dict.fromkeys([*route_out, *key_out]))
            if names_in or names_out:
                out[(route_name, key_name)] = ([rules[n] for n in names_in], [rules[n] for n in names_out])
    return out


def _tracing(config: GatewayConfig, previous: "Runtime | None") -> Tracing | None:
    """The config's tracer: the previous runtime's when `tracing:` did not change."""
    if config.tracing is None:
        return None
    if previous is not None and previous.tracing is not None and previous.config.tracing == config.tracing:
        return previous.tracing
    t = config.tracing
    mask = None
    if t.content:   # the text a trace holds, with every PII entity masked, as the log's
        from .guardrails import pii_mask
        mask = pii_mask()
    return Tracing(t.endpoint, t.service_name, t.sample_ratio, t.content, mask=mask)


def _targets(config: GatewayConfig, providers: dict[str, Provider]) -> dict[str, Target]:
    return {name: Target(name, model.name or name, providers[model.provider], model)
            for name, model in config.models.items()}


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
