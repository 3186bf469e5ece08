"""A cached answer, and how the exact layer's stores keep one."""

from __future__ import annotations

from typing import Any, Protocol

import orjson


class Entry:
    """A cached answer: the model that gave it and the chat.completion it gave, as a dict, as its
    JSON, or both: each is made from the other when first asked for, once per entry."""

    __slots__ = ("model", "_completion", "_body")

    def __init__(self, model: str, completion: dict[str, Any] | None = None, body: bytes | None = None):
        assert completion is not None or body is not None
        self.model = model
        self._completion = completion
        self._body = body

    @property
    def completion(self) -> dict[str, Any]:
        if self._completion is None:
            self._completion = orjson.loads(self._body)   # type: ignore[arg-type]
        return self._completion

    @property
    def body(self) -> bytes:
        """The completion as JSON, serialised once per entry, not once per hit."""
        if self._body is None:
            self._body = orjson.dumps(self._completion)
        return self._body

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "completion": self.completion}

    @classmethod
    def from_dict(cls, data: Any) -> "Entry | None":
        if not isinstance(data, dict) or not isinstance(data.get("completion"), dict):
            return None
        return cls(str(data.get("model") or ""), data["completion"])


class Store(Protocol):
    """The exact layer's backend: entries with a TTL, and the locks that coalesce misses.

    `pack` turns an entry into what the store keeps and `unpack` turns that back (None for
    something that is not an entry: a miss, counted in `errors`). Every call is a miss or a no-op
    when the backend is down, never an error. The locks matter only to a `shared` store (one that
    other processes see); in one process the flights coalesce misses on their own.
    """

    name: str
    shared: bool
    errors: int

    def pack(self, entry: Entry) -> Any: ...

    def unpack(self, value: Any) -> Entry | None: ...

    async def get(self, key: str) -> Any | None: ...

    async def set(self, key: str, value: Any, ttl_s: float) -> None: ...

    async def get_many(self, keys: list[str]) -> list[Any | None]:
        """The values of `keys`, in their order: None for each one missing (all of them when the
        backend cannot be asked). A batch is a few round trips, not one per key."""

    async def set_many(self, items: list[tuple[str, Any]], ttl_s: float) -> None:
        """Store (key, value) pairs, each for `ttl_s`, in as few round trips as the backend allows."""

    async def lock(self, key: str, token: str, ttl_ms: float) -> bool | None:
        """True if this flight (`token`) now holds the key's lock, expiring after `ttl_ms` unless
        renewed; False if another holds it; None if the store cannot be asked now."""

    async def renew(self, key: str, token: str, ttl_ms: float) -> bool | None:
        """Extend this flight's lock; False when it is no longer held, None when not known now."""

    async def unlock(self, key: str, token: str) -> None: ...

    async def locked(self, key: str) -> bool: ...

    async def count(self) -> int | None:
        """Entries held, or None when not known now."""

    async def close(self) -> None: ...
