"""The routes of one loaded config, with the state their strategies share (circuits, latencies),
and `resolve`: from the `model` a client sent to the route that runs targets."""

from __future__ import annotations

import random
from typing import Any, Mapping

from ..config import GatewayConfig
from ..errors import model_not_found
from ..upstream.target import Target
from .health import Health
from .latency import Latency
from .policy import make_policy
from .retry import Retry
from .route import Route
from .rules import Facts, Picker, Step
from .strategies import with_client_budget

_NO_HEADERS: Mapping[str, str] = {}

# Rules and defaults may chain (auto -> support -> ...); the loader refuses cycles, this is a backstop.
MAX_HOPS = 16


class RouteTable:
    def __init__(self, config: GatewayConfig, targets: dict[str, Target]):
        self.health = Health(config.health, targets)
        self.latency = Latency()
        rng = random.Random()
        retry = Retry(config.retry) if config.retry.attempts > 1 else None
        # A plain model name is its own route; a route of the same name takes precedence.
        plain = make_policy(config, None, (), self.health, self.latency, rng, retry)
        self.routes: dict[str, Route] = {name: Route(name, (t,), policy=plain) for name, t in targets.items()}
        for name, route in config.routes.items():
            if route.picks_route:
                self.routes[name] = Route(name, (), route.cache, picker=Picker.compile(route))
                continue
            chosen = tuple(targets[m] for m in route.target_models())
            self.routes[name] = Route(name, chosen, route.cache,
                                      policy=make_policy(config, route, chosen, self.health, self.latency, rng, retry))

    def resolve(self, model: str, payload: dict[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, trace: list[Step] | None = None) -> Route:
        """The route that runs a request for `model`: rules applied, the client's budget folded in."""
        route = self.routes.get(model)
        if route is None:
            raise model_not_found(model)
        if route.picker is not None:
            route = follow(self.routes, route, model, payload or {}, headers or _NO_HEADERS, trace)
        if route.policy.budget is not None and headers is not None:
            route = with_client_budget(route, headers)
        return route

    def adopt(self, previous: "RouteTable", unchanged: list[str]) -> None:
        """Keep circuits and latencies of targets a reload left as they were."""
        self.health.adopt(previous.health, unchanged)
        self.latency.adopt(previous.latency, unchanged)


def follow(routes: Mapping[str, Route], route: Route, model: str, payload: dict[str, Any],
           headers: Mapping[str, str], trace: list[Step] | None = None) -> Route:
    """From a rules route to the route that runs targets."""
    facts = Facts(model, payload, headers)
    for _ in range(MAX_HOPS):
        picker = route.picker
        if picker is None:
            return route
        name, index = picker.pick(facts)
        if trace is not None:
            trace.append(Step(route.name, name or "", index, picker.rules[index].when if index is not None else None))
        nxt = routes.get(name) if name is not None else None
        if nxt is None:  # the loader checks every name; a miss here is a bug, said plainly
            raise LookupError(f"route '{route.name}' picked '{name}', which does not exist")
        route = nxt
    raise LookupError(f"route '{model}' did not resolve within {MAX_HOPS} hops")
