"""A route (the name a client sends as `model`) and its policy: what runs for it, in what order,
retried and fallen back on how. Built once per config by `table.py`."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..config import RouteCacheConfig
from ..upstream.target import Target
from .checks import Escalate
from .health import Health
from .latency import Latency
from .retry import Retry
from .rules import Picker

# A strategy: the order in which a route's targets are tried for one request (strategies.py).
Order = Callable[["Route", dict[str, Any]], Sequence[Target]]


@dataclass(frozen=True, slots=True)
class Budget:
    max_cost_usd: float | None      # per request; None: no limit, only cheapest first
    over_budget: str                # "reject" (402) | "cheapest"
    prefer: str                     # "cheapest" | "listed" (the first listed that fits)
    output_tokens: int              # assumed when the request has no max_tokens


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything `forward` needs to know about one route."""

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
    baseline: Target | None = None
    # Only latency routes time their calls (other routes skip the bookkeeping on the hot path).
    tracks_latency: bool = False


@dataclass(frozen=True)
class Route:
    name: str
    targets: tuple[Target, ...]
    cache: RouteCacheConfig = field(default_factory=RouteCacheConfig)
    policy: Policy | None = None    # how targets are ordered, retried, fallen back on
    picker: Picker | None = None    # rules/alias routes: which route runs instead (no targets)

    @property
    def target_models(self) -> list[str]:
        return [t.model for t in self.targets]
