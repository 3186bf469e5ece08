"""A route's policy: everything `forward` needs to know about one route, built once per config."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import GatewayConfig, RouteConfig
from .checks import Escalate
from .health import Health
from .latency import Latency
from .retry import Retry
from .strategies import ORDERS, Budget, Order

if TYPE_CHECKING:
    from ..runtime import Target


@dataclass(frozen=True, slots=True)
class Policy:
    strategy: str
    order: Order
    health: Health
    latency: Latency
    rng: random.Random
    fallback_on: frozenset[int | str]
    retry: Retry | None = None                 # None: one attempt per target
    weights: tuple[float, ...] = ()            # weighted
    cum_weights: tuple[float, ...] = ()
    escalate: Escalate | None = None           # cascade
    budget: Budget | None = None               # cost
    # The target that would have answered had routing not chosen a cheaper one: set on the
    # request record when a cheaper target answers, so metrics can count what routing saved.
    baseline: "Target | None" = None
    # Only latency routes time their calls (other routes skip the bookkeeping on the hot path).
    tracks_latency: bool = False


def make_policy(config: GatewayConfig, route: RouteConfig | None, targets: tuple["Target", ...],
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


def _price(target: "Target") -> float:
    return (target.pricing.input_per_1m or 0.0) + (target.pricing.output_per_1m or 0.0)


def cheaper(a: "Target", b: "Target") -> bool:
    return _price(a) < _price(b)
