"""Routing policy: which route a request takes (rules), which targets it tries in what order
(strategies), and what happens when one fails (retries, fallbacks, circuit breaking, cascade).

route.py      Route, and its Policy: what `forward` knows about a route
table.py      the routes of a config, and `resolve` (rules followed, client budget)
rules.py      rules routes: first match wins
strategies.py first, weighted, least-busy, latency, cost (+ cascade's order)
policy.py     a route's Policy built from its config, once per config
forward.py    `forward(route, request)`: order the targets, then cascade.py or fallback.py
fallback.py   targets in order: circuit skip, fallback conditions, the 503 when all are open
attempt.py    one target: call, retry.py (tenacity), and what it tells health.py and latency.py
checks.py     cascade's answer checks
"""

from .forward import forward

__all__ = ["forward"]
