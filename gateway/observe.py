"""Turns finished request records into metrics and log lines (off the hot path)."""

from __future__ import annotations

from .record import RequestRecord


class Observer:
    def finish(self, record: RequestRecord) -> None:
        """Called exactly once per request, after the last byte went to the client."""

    def config_reloaded(self, result: str) -> None:
        """Called once per config reload attempt: result is "success" or "failure"."""
