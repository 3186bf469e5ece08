"""What both exact layers (chat answers, embeddings items) share about a request's plan: why one
bypasses the cache, and the TTL a client may ask for."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import bad_request


@dataclass(frozen=True, slots=True)
class Bypass:
    reason: str                  # e.g. "temperature is not 0", "route cache off"


def asked_ttl(value: str, max_ttl_s: int) -> int:
    """`x-gateway-cache-ttl`: whole seconds from 1 to `max_ttl_s`. The text is checked before it is
    read as a number: int() refuses thousands of digits, and "²" (a Latin-1 header byte) is a digit
    to isdigit but not to int()."""
    text = value.strip()
    if text.isascii() and text.isdigit() and len(text.lstrip("0")) <= len(str(max_ttl_s)):
        ttl = int(text)
        if 1 <= ttl <= max_ttl_s:
            return ttl
    raise bad_request(f"x-gateway-cache-ttl must be a whole number of seconds from 1 to {max_ttl_s} "
                      "(cache.exact.max_ttl_s).")
