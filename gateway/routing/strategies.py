"""Strategies: the order in which a route's targets are tried for one request.

Each is `order(route, payload) -> targets`; the first is called, the rest are fallbacks.
Targets whose circuit is open stay in the list (the forward loop skips them) so that a request
still finds a target when the circuits close again.
"""

from __future__ import annotations

import bisect
from dataclasses import replace
from typing import Any, Mapping, Sequence

from ..errors import GatewayError, bad_request
from ..pricing import cost_usd
from ..upstream.target import Target
from ..usage import estimate
from .route import Order, Route

MAX_COST_HEADER = "x-gateway-max-cost-usd"


def first(route: Route, payload: dict[str, Any]) -> Sequence[Target]:
    return route.targets


def weighted(route: Route, payload: dict[str, Any]) -> Sequence[Target]:
    """One target at random by weight among the available ones; the others, in order, as fallbacks."""
    policy = route.policy
    targets = route.targets
    available = policy.health.available
    live = [i for i, t in enumerate(targets) if available(t.model)]
    if not live:
        return targets
    if len(live) == len(targets):
        cumulative = policy.cum_weights
    else:
        cumulative, total = [], 0.0
        for i in live:
            total += policy.weights[i]
            cumulative.append(total)
    pick = live[bisect.bisect(cumulative, policy.rng.random() * cumulative[-1])]
    return (targets[pick], *targets[:pick], *targets[pick + 1:])


def least_busy(route: Route, payload: dict[str, Any]) -> Sequence[Target]:
    """Fewest requests in flight or queued at the target's provider (ties keep the listed order)."""
    available = route.policy.health.available
    return sorted(route.targets, key=lambda t: (not available(t.model), _busy(t)))


def _busy(target: Target) -> int:
    limiter = target.provider.limiter
    return limiter.in_flight + limiter.queued


def latency(route: Route, payload: dict[str, Any]) -> Sequence[Target]:
    """Lowest recent time to first byte, by power of two choices: compare two random available
    targets and take the faster, so the fastest target is not stampeded by everyone at once.
    A target with no recent sample is tried first (explored)."""
    policy = route.policy
    available, estimate_of = policy.health.available, policy.latency.get
    live = [t for t in route.targets if available(t.model)]
    if not live:
        return route.targets
    chosen = next((t for t in live if estimate_of(t.model) is None), None)
    if chosen is None:
        a, b = policy.rng.sample(live, 2) if len(live) > 2 else (live[0], live[-1])
        chosen = a if estimate_of(a.model) <= estimate_of(b.model) else b
    rest = sorted((t for t in route.targets if t is not chosen), key=lambda t: estimate_of(t.model) or 0.0)
    return (chosen, *rest)


# ---- cost -------------------------------------------------------------------------------------

def request_tokens(payload: dict[str, Any], default_output: int) -> tuple[int, int]:
    """Estimated prompt tokens and the output tokens the request may cost at most."""
    prompt = estimate(payload, None)["prompt_tokens"]
    output = payload.get("max_completion_tokens") or payload.get("max_tokens") or payload.get("max_output_tokens")
    if not isinstance(output, int) or isinstance(output, bool) or output <= 0:
        output = default_output
    n = payload.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        output *= n
    return prompt, output


def estimated_costs(targets: Sequence[Target], prompt: int, output: int) -> list[float]:
    usage = {"prompt_tokens": prompt, "completion_tokens": output}
    return [cost_usd(t.pricing, usage) for t in targets]


def cost(route: Route, payload: dict[str, Any]) -> Sequence[Target]:
    """The targets whose estimated cost fits the budget, cheapest first (or in listed order)."""
    budget = route.policy.budget
    prompt, output = request_tokens(payload, budget.output_tokens)
    costs = estimated_costs(route.targets, prompt, output)
    limit = budget.max_cost_usd
    fits = [(c, i) for i, c in enumerate(costs) if limit is None or c <= limit]
    if budget.prefer == "cheapest":
        fits.sort()
    if fits:
        return [route.targets[i] for _, i in fits]
    cheapest = min(range(len(costs)), key=costs.__getitem__)
    if budget.over_budget == "cheapest":
        return [route.targets[cheapest]]
    raise over_budget(route.name, limit or 0.0, route.targets[cheapest].model, costs[cheapest], prompt, output)


def over_budget(route: str, limit: float, model: str, cheapest: float, prompt: int, output: int) -> GatewayError:
    return GatewayError(
        402,
        f"No target of route '{route}' fits this request's budget of ${limit:.8f}: the cheapest, '{model}', "
        f"is estimated at ${cheapest:.8f} (about {prompt} prompt tokens and up to {output} output tokens). "
        f"Raise the budget, lower max_tokens, or shorten the prompt.",
        "invalid_request_error", "budget_exceeded",
    )


def with_client_budget(route: Route, headers: Mapping[str, str]) -> Route:
    """A cost route with the budget lowered by the request's `x-gateway-max-cost-usd` (never raised)."""
    asked = headers.get(MAX_COST_HEADER)
    if asked is None:
        return route
    try:
        value = float(asked)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise bad_request(f"{MAX_COST_HEADER} must be a positive number of US dollars (got {asked!r}).")
    budget = route.policy.budget
    if budget.max_cost_usd is not None and budget.max_cost_usd <= value:
        return route
    return replace(route, policy=replace(route.policy, budget=replace(budget, max_cost_usd=value)))


ORDERS: dict[str, Order] = {
    "first": first,
    "cascade": first,     # cheapest first, as listed; escalation walks the list
    "weighted": weighted,
    "least-busy": least_busy,
    "latency": latency,
    "cost": cost,
}
