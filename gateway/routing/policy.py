"""Building a route's policy from its config, and comparing targets by price."""

from __future__ import annotations

import itertools
import random

from ..config import GatewayConfig, RouteConfig
from ..upstream.target import Target
from .checks import Escalate
from .health import Health
from .latency import Latency
from .retry import Retry
from .route import Budget, Policy
from .strategies import ORDERS


def make_policy(config: GatewayConfig, route: RouteConfig | None, targets: tuple[Target, ...],
                health: Health, latency: Latency, rng: random.Random, retry: Retry | None) -> Policy:
    fallback_on = frozenset(config.fallback.on)
    if route is None:
        return Policy("first", ORDERS["first"], health, latency, rng, fallback_on, retry)
    weights = tuple(route.target_weights())
    escalate = budget = baseline = None
    if route.strategy == "cascade":
        escalate = Escalate.from_config(route.escalate_when)
        baseline = targets[-1]         # the strongest: what answers when every check fails
    elif route.strategy == "cost":
        budget = Budget(route.max_cost_usd, route.over_budget, route.prefer, route.estimated_output_tokens)
        baseline = max(targets, key=_price)  # what a budget-blind route would have called
    return Policy(route.strategy, ORDERS[route.strategy], health, latency, rng, fallback_on, retry,
                  weights, tuple(itertools.accumulate(weights)), escalate, budget, baseline,
                  tracks_latency=route.strategy == "latency")


def _price(target: Target) -> float:
    return (target.pricing.input_per_1m or 0.0) + (target.pricing.output_per_1m or 0.0)


def cheaper(a: Target, b: Target) -> bool:
    return _price(a) < _price(b)
