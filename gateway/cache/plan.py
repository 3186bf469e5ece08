"""What both exact layers (chat answers, embeddings items) share about a request's plan: why one
bypasses the cache, and what its headers ask of it (no-cache, no-store, a TTL)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..config import ExactCacheConfig, RouteCacheConfig
from ..errors import bad_request


@dataclass(frozen=True, slots=True)
class Bypass:
    reason: str                  # e.g. "temperature is not 0", "route cache off"


def controls(headers: Mapping[str, str], rules: RouteCacheConfig, exact: ExactCacheConfig) -> "tuple[bool, bool, float] | Bypass":
    """What a request's headers and its route say of the exact layers: whether to look up, whether
    to store, and for how long (the route's ttl_s, or `x-gateway-cache-ttl`, at most max_ttl_s)."""
    control = {part.strip().lower() for part in headers.get("cache-control", "").split(",")}
    lookup, store = "no-cache" not in control, "no-store" not in control
    if not lookup and not store:
        return Bypass("cache-control: no-cache, no-store")
    # A route's ttl_s is not checked against max_ttl_s where the config is read: bound it here.
    ttl_s = min(rules.ttl_s or exact.ttl_s, exact.max_ttl_s)
    asked = headers.get("x-gateway-cache-ttl")
    if asked is not None:
        ttl_s = asked_ttl(asked, exact.max_ttl_s)
    return lookup, store, ttl_s


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
