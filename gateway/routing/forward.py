"""From a resolved route to an answer: the strategy orders the targets, then they are tried."""

from __future__ import annotations

from ..upstream.call import Answer
from ..upstream.request import UpstreamRequest
from .cascade import cascade
from .fallback import first_answer
from .policy import cheaper
from .route import Route

CHAT_PATH = "/chat/completions"


async def forward(route: Route, request: UpstreamRequest) -> Answer:
    """A JsonAnswer or a StreamAnswer (headers in, body not read) from one of the route's targets,
    or the error the client should see (the last target's, a 402 over budget, a 503 when every
    circuit is open)."""
    policy = route.policy
    targets = policy.order(route, request.payload)
    if policy.escalate is not None and request.path == CHAT_PATH:  # embeddings have nothing to check
        answer: Answer = await cascade(route, targets, request)
    else:
        answer = await first_answer(route, targets, request)
    baseline = policy.baseline
    if baseline is not None and answer.target is not baseline and cheaper(answer.target, baseline):
        request.record.baseline_model = baseline.model
    return answer
