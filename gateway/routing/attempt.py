"""One target, tried once or retried: what each attempt tells the circuit breaker and the record.

A JSON answer's verdict is given when it arrives. A stream's attempt returns once its headers are
in, which says little: a provider can send 200 and break every stream after two chunks. So a
stream's verdict is left to the stream itself (`StreamAnswer.verdict`), given when it ends.
"""

from __future__ import annotations

import time
from typing import Callable

from ..upstream.call import Answer, StreamAnswer, TargetFailed, UpstreamStatus, call_target
from ..upstream.request import UpstreamRequest
from ..upstream.target import Target
from .health import Health
from .retry import retry_after_s
from .route import Policy

# Failures that say the target is unwell (they count towards opening its circuit). The gateway's
# own queue being full says nothing about the target, and a 4xx is about the request.
UNWELL_KINDS = frozenset({"timeout", "connect", "invalid"})


async def attempt(policy: Policy, target: Target, request: UpstreamRequest) -> Answer:
    """Call the target, with the retries the config allows; raise the last failure."""
    retry = policy.retry
    if retry is None:
        return await call_once(policy, target, request)
    name = target.model
    return await retry.call(lambda: call_once(policy, target, request),
                            lambda: policy.health.closed(name), request.record, name)


async def call_once(policy: Policy, target: Target, request: UpstreamRequest) -> Answer:
    health, name, record = policy.health, target.model, request.record
    started = time.perf_counter()
    try:
        answer = await call_target(target, request)
    except UpstreamStatus as exc:
        record.error_kind = f"upstream_{exc.status}"
        record.upstream_errors.append((target.provider.name, _status_kind(exc.status)))
        if exc.status == 429 or exc.status >= 500:
            health.failure(name, retry_after_s(exc))
        else:
            health.success(name)  # the target answered; the request was wrong
        raise
    except TargetFailed as exc:
        record.error_kind = exc.kind
        record.upstream_errors.append((target.provider.name, exc.kind))
        if exc.kind in UNWELL_KINDS:
            health.failure(name)
            if exc.kind == "timeout" and policy.tracks_latency:
                policy.latency.observe(name, time.perf_counter() - started)
        else:
            health.release(name)
        raise
    except BaseException:
        health.release(name)  # cancelled (the client left): no verdict on the target
        raise
    if isinstance(answer, StreamAnswer):
        answer.verdict = stream_verdict(health, name)
    else:
        health.success(name)
    if policy.tracks_latency:  # a stream is returned once its headers are in: time to first byte
        policy.latency.observe(name, time.perf_counter() - started)
    return answer


def stream_verdict(health: Health, name: str) -> Callable[[bool | None], None]:
    """What a stream's end tells the target's circuit: True (it ended with [DONE]), False (it broke,
    timed out or ended early), None (the client left first: nothing learnt, a trial is given back)."""
    def verdict(completed: bool | None) -> None:
        if completed:
            health.success(name)
        elif completed is None:
            health.release(name)
        else:
            health.failure(name)

    return verdict


def _status_kind(status: int) -> str:
    if status == 429:
        return "http_429"
    return "http_5xx" if status >= 500 else "http_4xx"
