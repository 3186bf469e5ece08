"""Retries of one target: exponential backoff with jitter, honouring the upstream's Retry-After.

The loop is tenacity's (`AsyncRetrying`); this module says what is retried and how long to wait.
A retry only ever happens before anything has been sent to the client: `forward` returns a stream
as soon as its headers are in, and tenacity never sees what happens after that.
"""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime
from typing import Awaitable, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from .. import tracing
from ..config import RetryConfig
from ..record import RequestRecord
from ..upstream.call import Answer, TargetFailed, UpstreamStatus


def condition(exc: BaseException) -> int | str | None:
    """The word `retry.on` / `fallback.on` use for a failed attempt: its status, or its kind."""
    if isinstance(exc, UpstreamStatus):
        return exc.status
    if isinstance(exc, TargetFailed):
        return exc.kind
    return None


def retry_after_s(exc: BaseException) -> float | None:
    """The upstream's Retry-After in seconds, if it sent a usable one."""
    if isinstance(exc, UpstreamStatus):
        return parse_retry_after(exc.retry_after)
    if isinstance(exc, TargetFailed):
        return parse_retry_after(exc.error.headers.get("retry-after"))
    return None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from now that a Retry-After value asks for: delta-seconds or an HTTP date (a date
    already past is 0). None for anything else: a negative, infinite or NaN number, or garbage."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if 0 <= seconds < math.inf else None   # NaN fails both comparisons
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class Retry:
    def __init__(self, config: RetryConfig):
        self.config = config
        self.on = frozenset(config.on)
        self._backoff = wait_exponential_jitter(multiplier=config.backoff_s, max=config.max_backoff_s,
                                                jitter=config.backoff_s)
        # Copied per request (tenacity keeps per-call state on the object).
        self._template = AsyncRetrying(stop=stop_after_attempt(config.attempts), wait=self._wait, reraise=True)

    def retryable(self, exc: BaseException) -> bool:
        if condition(exc) not in self.on:
            return False
        after = retry_after_s(exc)
        # An upstream asking for a longer pause than we would hold a request for: fall back instead.
        return after is None or after <= self.config.max_backoff_s

    def _wait(self, state: RetryCallState) -> float:
        backoff = self._backoff(state)
        after = retry_after_s(state.outcome.exception()) if state.outcome is not None else None
        return backoff if after is None else max(backoff, after)

    async def call(self, attempt: Callable[[], Awaitable[Answer]], still_worth_it: Callable[[], bool],
                   record: RequestRecord, target: str = "") -> Answer:
        """`attempt` until it answers, the retries run out, or `still_worth_it()` says stop (the
        target's circuit opened meanwhile)."""
        def count(state: RetryCallState) -> None:
            record.retries += 1
            if record.trace is not None:
                failure = state.outcome.exception() if state.outcome is not None else None
                tracing.retried(record.trace, target, state.attempt_number, str(condition(failure)),
                                state.upcoming_sleep)

        retrying = self._template.copy(
            retry=retry_if_exception(lambda exc: self.retryable(exc) and still_worth_it()),
            before_sleep=count,
        )
        async for try_ in retrying:
            with try_:
                return await attempt()
        raise AssertionError("tenacity ended without an outcome")  # reraise=True: never reached
