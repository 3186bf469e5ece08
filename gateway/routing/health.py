"""Circuit breaker per target: stop sending requests to a target that keeps failing.

closed --(failures_to_open failures in a row, within window_s)--> open
open --(cooldown_s passed; the next request is the one trial)--> half-open
half-open --(trial succeeds)--> closed;  --(trial fails)--> open again, for another cooldown

When the failure that opens a circuit carried the provider's Retry-After, the trial comes then if
that is sooner than cooldown_s: the provider's own word on when it is back beats our guess.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable

from ..config import HealthConfig

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class Circuit:
    __slots__ = ("state", "failures", "first_failure_at", "opened_at", "retry_after_s")

    def __init__(self) -> None:
        self.state = CLOSED
        self.failures = 0            # in a row, since first_failure_at
        self.first_failure_at = 0.0
        self.opened_at = 0.0
        self.retry_after_s: float | None = None   # what the failure that opened it asked for

    def open(self, now: float, retry_after_s: float | None) -> None:
        self.state, self.opened_at, self.retry_after_s = OPEN, now, retry_after_s

    def trial_in(self, now: float, cooldown_s: float) -> float:
        """Seconds until an open circuit lets its trial through (0 or less: due now)."""
        wait = cooldown_s if self.retry_after_s is None else min(cooldown_s, self.retry_after_s)
        return wait - (now - self.opened_at)


class Health:
    """The circuits of a runtime's targets, by target (model) name.

    `allow` is asked before each attempt; every allowed attempt then ends in exactly one of
    `success`, `failure` or `release` (the attempt ended without saying anything about the target,
    e.g. the client left), so a half-open circuit's single trial slot is always given back. A
    stream's verdict comes when it ends, not when its headers are in (`routing/attempt.py`).
    """

    def __init__(self, config: HealthConfig, names: Iterable[str], clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.enabled = config.enabled
        self.clock = clock
        self.circuits = {name: Circuit() for name in names}

    def allow(self, name: str) -> bool:
        """May an attempt go to this target now? Takes the trial slot of a circuit due for one."""
        circuit = self.circuits.get(name)
        if circuit is None or circuit.state is CLOSED:
            return True
        if circuit.state is OPEN and circuit.trial_in(self.clock(), self.config.cooldown_s) <= 0:
            circuit.state = HALF_OPEN  # this caller is the trial; everyone else keeps skipping
            return True
        return False

    def available(self, name: str) -> bool:
        """Like `allow`, without taking anything: for strategies choosing among targets."""
        circuit = self.circuits.get(name)
        if circuit is None or circuit.state is CLOSED:
            return True
        return circuit.state is OPEN and circuit.trial_in(self.clock(), self.config.cooldown_s) <= 0

    def closed(self, name: str) -> bool:
        circuit = self.circuits.get(name)
        return circuit is None or circuit.state is CLOSED

    def success(self, name: str) -> None:
        circuit = self.circuits.get(name)
        if circuit is not None and (circuit.failures or circuit.state is not CLOSED):
            circuit.state = CLOSED
            circuit.failures = 0

    def failure(self, name: str, retry_after_s: float | None = None) -> None:
        """`retry_after_s`: the provider's Retry-After on this failure, parsed (retry.parse_retry_after)."""
        circuit = self.circuits.get(name)
        if circuit is None or not self.enabled:
            return
        now = self.clock()
        if circuit.state is HALF_OPEN:
            circuit.open(now, retry_after_s)
            return
        if circuit.state is OPEN:  # an attempt that started before the circuit opened
            return
        if not circuit.failures or now - circuit.first_failure_at > self.config.window_s:
            circuit.failures, circuit.first_failure_at = 0, now
        circuit.failures += 1
        if circuit.failures >= self.config.failures_to_open:
            circuit.open(now, retry_after_s)

    def release(self, name: str) -> None:
        """The attempt told us nothing: a trial slot goes back (the next request is the trial)."""
        circuit = self.circuits.get(name)
        if circuit is not None and circuit.state is HALF_OPEN:
            circuit.state = OPEN  # its trial was due: the next `allow` is a trial again

    def retry_after_s(self, names: Iterable[str]) -> int:
        """Whole seconds until the first of these targets takes a trial request (at least 1)."""
        now = self.clock()
        waits = [c.trial_in(now, self.config.cooldown_s)
                 for c in (self.circuits.get(n) for n in names) if c is not None and c.state is not CLOSED]
        return max(1, math.ceil(min(waits))) if waits else 1

    def state(self, name: str) -> str:
        circuit = self.circuits.get(name)
        return CLOSED if circuit is None else circuit.state

    def snapshot(self) -> dict[str, bool]:
        """Target name -> healthy (its circuit is closed), for the metrics."""
        return {name: c.state is CLOSED for name, c in self.circuits.items()}

    def adopt(self, previous: "Health", names: Iterable[str]) -> None:
        """Keep what a previous runtime learnt about targets a reload did not change."""
        for name in names:
            if name in previous.circuits and name in self.circuits:
                self.circuits[name] = previous.circuits[name]
