"""From a resolved route to an answer: the strategy orders the targets, then they are tried."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..record import RequestRecord
from ..upstream.call import Answer
from .cascade import cascade
from .fallback import first_answer
from .policy import cheaper

if TYPE_CHECKING:
    from ..runtime import Route

CHAT_PATH = "/chat/completions"


async def forward(route: "Route", payload: dict[str, Any], path: str, stream: bool,
                  headers: dict[str, str], record: RequestRecord) -> Answer:
    """A JsonAnswer or a StreamAnswer (headers in, body not read) from one of the route's targets,
    or the error the client should see (the last target's, a 402 over budget, a 503 when every
    circuit is open)."""
    policy = route.policy
    targets = policy.order(route, payload)
    if policy.escalate is not None and path == CHAT_PATH:  # embeddings have nothing to check
        answer: Answer = await cascade(route, targets, payload, path, headers, record)
    else:
        answer = await first_answer(route, targets, payload, path, stream, headers, record)
    baseline = policy.baseline
    if baseline is not None and answer.target is not baseline and cheaper(answer.target, baseline):
        record.baseline_model = baseline.model
    return answer
