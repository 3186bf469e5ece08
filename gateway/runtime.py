"""What a loaded config becomes at run time: providers with open pools, resolved routes, keys."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .config import GatewayConfig, LoadedConfig, ModelConfig
from .errors import GatewayError, model_not_found
from .upstream.client import Provider


@dataclass(frozen=True)
class Target:
    """One model a route may call: the name clients know it by, and what goes upstream."""

    model: str
    upstream_model: str
    provider: Provider
    pricing: ModelConfig


@dataclass(frozen=True)
class Route:
    name: str
    targets: tuple[Target, ...]


class Runtime:
    def __init__(self, loaded: LoadedConfig, providers: dict[str, Provider]):
        self.loaded = loaded
        self.config: GatewayConfig = loaded.config
        self.providers = providers
        self.max_body_bytes = self.config.server.max_body_bytes
        targets = {
            name: Target(name, model.name or name, providers[model.provider], model)
            for name, model in self.config.models.items()
        }
        # A plain model name is its own route; a route of the same name takes precedence.
        self.routes: dict[str, Route] = {name: Route(name, (t,)) for name, t in targets.items()}
        for name, route in self.config.routes.items():
            self.routes[name] = Route(name, tuple(targets[m] for m in route.target_models()))
        self._keys = {_digest(k.key): k.name for k in self.config.auth.keys}

    @classmethod
    def start(cls, loaded: LoadedConfig) -> "Runtime":
        providers = {name: Provider(name, cfg) for name, cfg in loaded.config.providers.items()}
        for provider in providers.values():
            provider.open()
        return cls(loaded, providers)

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()

    def resolve(self, model: str) -> Route:
        route = self.routes.get(model)
        if route is None:
            raise model_not_found(model)
        return route

    @property
    def auth_required(self) -> bool:
        return bool(self._keys)

    def authenticate(self, authorization: str | None) -> str | None:
        """The name of the gateway key presented, or None when the gateway has no keys."""
        if not self._keys:
            return None
        token = _bearer(authorization)
        name = self._keys.get(_digest(token)) if token else None
        if name is None:
            raise GatewayError(
                401, "Incorrect API key provided." if token else "Missing bearer token in the Authorization header.",
                "invalid_request_error", "invalid_api_key",
            )
        return name


def _bearer(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
