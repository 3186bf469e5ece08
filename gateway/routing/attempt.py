"""One target, tried once or retried: what each attempt tells the circuit breaker and the record."""

from __future__ import annotations

import time
from ..upstream.call import Answer, TargetFailed, UpstreamStatus, call_target
from ..upstream.request import UpstreamRequest
from ..upstream.target import Target
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
                            lambda: policy.health.closed(name), request.record)


async def call_once(policy: Policy, target: Target, request: UpstreamRequest) -> Answer:
    health, name, record = policy.health, target.model, request.record
    started = time.perf_counter()
    try:
        answer = await call_target(target, request)
    except UpstreamStatus as exc:
        record.error_kind = f"upstream_{exc.status}"
        record.upstream_errors.append((target.provider.name, _status_kind(exc.status)))
        if exc.status == 429 or exc.status >= 500:
            health.failure(name)
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
    health.success(name)
    if policy.tracks_latency:  # a stream is returned once its headers are in: time to first byte
        policy.latency.observe(name, time.perf_counter() - started)
    return answer


def _status_kind(status: int) -> str:
    if status == 429:
        return "http_429"
    return "http_5xx" if status >= 500 else "http_4xx"
