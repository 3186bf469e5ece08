"""The in-process exact cache: cachetools LRU or LFU, with a TTL per entry checked on read.

An answer is kept as its JSON bytes in an Entry of its own, read into a dict by the first hit that
needs one (and kept: a hot entry is parsed once). Kept as dicts, 10,000 answers are some 70,000
objects that every full collection of the garbage collector walks (25 ms here), a pause that a
cache filling with misses makes frequent; as bytes, two objects an entry until it is hit."""

from __future__ import annotations

import time
from typing import Any

from cachetools import LFUCache, LRUCache

from .entry import Entry


class MemoryStore:
    name = "memory"
    shared = False

    def __init__(self, max_entries: int, eviction: str):
        cls = LFUCache if eviction == "lfu" else LRUCache
        self._entries: LRUCache | LFUCache = cls(maxsize=max_entries)
        self.errors = 0

    def __len__(self) -> int:
        return len(self._entries)

    def pack(self, entry: Entry) -> Entry:
        return Entry(entry.model, None, entry.body)   # not the leader's dict: the bytes alone

    def unpack(self, value: Entry) -> Entry:
        return value

    async def get(self, key: str) -> Any | None:
        item = self._entries.get(key)
        if item is None:
            return None
        expires_at, value = item
        if expires_at <= time.monotonic():
            self._entries.pop(key, None)
            return None
        return value

    async def set(self, key: str, value: Any, ttl_s: float) -> None:
        self._entries[key] = (time.monotonic() + ttl_s, value)

    async def get_many(self, keys: list[str]) -> list[Any | None]:
        return [await self.get(key) for key in keys]

    async def set_many(self, items: list[tuple[str, Any]], ttl_s: float) -> None:
        expires_at = time.monotonic() + ttl_s
        for key, value in items:
            self._entries[key] = (expires_at, value)

    # Coalescing across processes needs a shared store; in one process the flights are enough
    # (they never ask this store for a lock).
    async def lock(self, key: str, token: str, ttl_ms: float) -> bool | None:
        return True

    async def renew(self, key: str, token: str, ttl_ms: float) -> bool | None:
        return True

    async def unlock(self, key: str, token: str) -> None:
        return None

    async def locked(self, key: str) -> bool:
        return False

    async def count(self) -> int:
        return len(self._entries)

    async def close(self) -> None:
        return None
