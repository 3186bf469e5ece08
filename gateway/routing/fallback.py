"""Targets in order: skip open circuits, fall back on the listed failures, pass the rest through."""

from __future__ import annotations

from typing import Callable, Sequence

from .. import tracing
from ..errors import GatewayError
from ..upstream.call import Answer, JsonAnswer, TargetCannot, TargetFailed, UpstreamStatus
from ..upstream.request import UpstreamRequest
from ..upstream.target import Target
from .attempt import attempt
from .route import Route

# Cascade: why an answer is not accepted, or None to accept it.
Check = Callable[[JsonAnswer], "str | None"]


async def first_answer(route: Route, targets: Sequence[Target], request: UpstreamRequest,
                       check: Check | None = None) -> Answer:
    """The first acceptable answer from `targets`, tried in order.

    Nothing has been sent to the client yet, so moving on to the next target is always safe. A
    target whose provider type cannot take the request (`n` > 1 to Anthropic, a Responses request
    with server-side state to anything but OpenAI) is passed over as `unsupported`; when no target
    could answer, the error is the failure that made the route move on, else that refusal.
    Each move past a target is counted in `record.fallbacks` with its reason (the status, the
    failure kind, or `circuit_open`) when another target is then tried. With `check` (cascade),
    a rejected answer moves on too, as an escalation; the last target's answer is always accepted,
    and if every later target fails the best rejected answer is returned rather than an error.
    """
    policy = route.policy
    health = policy.health
    record = request.record
    last_error: GatewayError | None = None
    refused: GatewayError | None = None   # the first target that could not take the request: why
    pending: list[str] | None = None   # reasons for targets moved past, not yet counted
    held: JsonAnswer | None = None     # cascade: a rejected answer, in case nothing better comes
    final = targets[-1]
    for target in targets:
        if not health.allow(target.model):
            pending = (pending or []) + ["circuit_open"]
            continue
        if pending:
            record.fallbacks.extend(pending)
            pending = None
        record.model, record.provider = target.model, target.provider.name
        try:
            answer = await attempt(policy, target, request)
        except UpstreamStatus as exc:
            if exc.status not in policy.fallback_on:
                raise  # 4xx other than 429 (and whatever the config does not fall back on)
            last_error, reason = exc, str(exc.status)
        except TargetFailed as exc:
            if exc.kind not in policy.fallback_on:
                raise exc.error from None
            last_error, reason = exc.error, exc.kind
        except TargetCannot as exc:   # its provider type has no place for the request: the next may
            refused, reason = refused or exc.error, "unsupported"
        else:
            if check is None or target is final:
                return answer
            assert isinstance(answer, JsonAnswer)  # a cascade never streams from upstream
            problem = check(answer)
            if problem is None:
                return answer
            held = answer
            record.escalations.append(f"{target.model}:{problem}")
            continue
        tracing.fell_back(record.trace, target.model, reason)
        pending = (pending or []) + [reason]
    if held is not None:
        record.model, record.provider = held.target.model, held.target.provider.name
        return held
    if last_error is not None:
        raise last_error   # what made the route move on (a 429, with its Retry-After), not a later refusal
    if refused is not None:
        raise refused
    names = [t.model for t in targets]
    raise all_open(route.name, health.retry_after_s(names))


def all_open(route: str, retry_after_s: int) -> GatewayError:
    return GatewayError(
        503, f"Every target of route '{route}' is failing and paused (circuit open); retry after {retry_after_s}s.",
        "api_error", "targets_unavailable", None, {"retry-after": str(retry_after_s)},
    )
