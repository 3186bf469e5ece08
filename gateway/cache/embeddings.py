"""The embeddings cache: every input item of a /v1/embeddings request is an exact-cache entry of
its own, so a batch that repeats chunks seen before sends only the new ones upstream.

`EmbeddingsCache.consult` answers a request with a Bypass (the cache is not for it, and why) or a
`Lookup`: the item keys, what the store had for them, and the items that go upstream (each distinct
missing item once, in input order). Once the provider has answered those, `Lookup.merge` gives the
client's answer in input order, and `EmbeddingsCache.put` stores the new items after the reply.

An item is kept as the provider sent its `embedding`, in the encoding asked for (a float array or a
base64 string of little-endian float32), so a hit is the provider's bytes spliced into the answer,
never decoded or re-encoded. The store is one of the exact layer's kinds (memory or Redis), an
instance of its own: re-embedding a corpus never evicts chat answers, and its failures count for
this layer. See README "Embeddings cache".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import orjson

from ..config import CacheConfig, RouteCacheConfig
from .plan import Bypass, controls
from .entry import Store
from .keys import NOT_IN_KEY, _digest

KEY_PREFIX = "gw:emb:v1:"

# The request fields not in an item's key besides the exact layer's (`user`, `metadata`...):
# the input (each item has its own key) and the encoding (put back with its default filled in).
ITEM_NOT_IN_KEY = NOT_IN_KEY | {"input", "encoding_format"}
ENCODINGS = frozenset({"float", "base64"})

# The usage of an answer made of hits only: nothing was sent, nothing is billed.
NO_USAGE = {"prompt_tokens": 0, "total_tokens": 0}


def input_items(given: Any) -> list[Any] | None:
    """The input as items: a string or a token array is one item, a list of strings or of token
    arrays one per element. None for another shape, which this layer leaves to the provider."""
    if isinstance(given, str):
        return [given]
    if not isinstance(given, list) or not given:
        return None
    if _tokens(given):
        return [given]
    for item in given:
        if not isinstance(item, str) and not (isinstance(item, list) and _tokens(item)):
            return None
    return given


def _tokens(value: list[Any]) -> bool:
    return all(type(t) is int for t in value)  # not bool, an int to isinstance


def item_count(given: Any) -> int:
    """How many items the metrics count for an input (a shape not taken apart counts as one)."""
    items = input_items(given)
    return len(items) if items is not None else 1


def item_keys(route: str, targets: list[str], tenant: str, payload: dict[str, Any], encoding: str,
              items: list[Any]) -> list[str]:
    """One key per item: the hash of what the items share (route, targets, tenant, every request
    field but `input`, `user` and the few that never change an answer), then of the item itself,
    byte for byte (not NFC-normalised: a provider embeds the text it is given)."""
    params = {k: v for k, v in payload.items() if k not in ITEM_NOT_IN_KEY}
    params["encoding_format"] = encoding
    shared = _digest({"layer": "embeddings", "route": route, "targets": targets, "tenant": tenant,
                      "request": params}).encode()
    blake2b = hashlib.blake2b
    return [KEY_PREFIX + blake2b(shared + orjson.dumps(item), digest_size=20).hexdigest() for item in items]


@dataclass(frozen=True, slots=True)
class Item:
    """A stored embedding: the config model that made it, the `model` its answer named, and the
    `embedding` value as JSON, exactly as the provider sent it."""

    model: str
    answered_as: Any
    embedding: bytes

    def pack(self) -> bytes:
        # orjson writes no raw newline (not even in a string): the first one ends the header.
        return orjson.dumps([self.model, self.answered_as]) + b"\n" + self.embedding

    @classmethod
    def unpack(cls, value: Any, check: bool) -> "Item | None":
        """`check`: the value comes from a store others write to (Redis), so its embedding is
        parsed once before it is spliced into an answer; garbage there is a miss."""
        if isinstance(value, Item):
            return value
        if not isinstance(value, bytes):
            return None
        header, _, embedding = value.partition(b"\n")
        try:
            head = orjson.loads(header)
            if check and not isinstance(orjson.loads(embedding), (list, str)):
                return None
        except orjson.JSONDecodeError:
            return None
        if not isinstance(head, list) or len(head) != 2 or not isinstance(head[0], str):
            return None
        return cls(head[0], head[1], embedding)


@dataclass(slots=True)
class Lookup:
    """One embeddings request the cache takes part in."""

    items: list[Any]                 # per input position
    keys: list[str]                  # per input position
    found: dict[str, Item]           # key -> the stored item, for the hits
    store: bool                      # False on `Cache-Control: no-store`
    ttl_s: float
    counts: dict[str, int]           # the items by lookup result (hit, miss; bypass on no-cache)
    missing: list[str] = field(default_factory=list)   # distinct keys to ask for, in input order
    sent: list[Any] = field(default_factory=list)      # their items: the upstream call's input
    new: list[tuple[str, Item]] = field(default_factory=list)   # what the answer adds, to store
    _answer: dict[str, Any] | None = None   # a whole answer kept to read its items after the reply
    _model: str = ""

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for key, item in zip(self.keys, self.items):
            if key not in self.found and key not in seen:
                seen.add(key)
                self.missing.append(key)
                self.sent.append(item)

    @property
    def result(self) -> str:
        """What `x-gateway-cache` and the log say: hit-embeddings, partial or miss."""
        if not self.missing:
            return "hit-embeddings"
        return "partial" if self.found else "miss"

    @property
    def whole(self) -> bool:
        """The items to send are the input itself (no hit, no item twice): the request goes
        upstream untouched and its answer comes back to the client as the provider sent it."""
        return len(self.missing) == len(self.items)

    @property
    def model(self) -> str:
        """The model of the first item, for an answer made of hits only."""
        return self.found[self.keys[0]].model

    def upstream_payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        return payload if self.whole else {**payload, "input": self.sent}

    def answer(self) -> bytes:
        """An answer made of hits only, in input order."""
        first = self.found[self.keys[0]]
        return orjson.dumps({"object": "list", "data": self._rows({}), "model": first.answered_as,
                             "usage": NO_USAGE})

    def merge(self, answer: dict[str, Any], raw: bytes, model: str) -> bytes | None:
        """The client's answer once the provider answered the items sent (`answer`, parsed;
        `raw`, its bytes): the provider's own bytes when it was sent the whole input, else its
        answer with `data` holding every item in input order. None when the answer does not give
        one embedding per item sent, so it cannot be put together."""
        if self.whole:
            self._answer, self._model = answer, model   # read for the store after the reply
            return raw
        answered = self._answered(answer, model)
        if answered is None:
            return None
        self.new = answered
        return orjson.dumps({**answer, "data": self._rows(dict(answered))})

    def to_store(self) -> list[tuple[str, Item]]:
        """The items the answer added (for a whole answer, read from it now: after the reply)."""
        if self._answer is not None:
            answer, self._answer = self._answer, None
            self.new = self._answered(answer, self._model) or []
        return self.new

    def _answered(self, answer: dict[str, Any], model: str) -> list[tuple[str, Item]] | None:
        embeddings = self._embeddings(answer)
        if embeddings is None:
            return None
        answered_as = answer.get("model")
        return [(key, Item(model, answered_as, embedding)) for key, embedding in zip(self.missing, embeddings)]

    def _rows(self, answered: dict[str, Item]) -> list[dict[str, Any]]:
        rows = []
        for index, key in enumerate(self.keys):
            item = self.found.get(key) or answered[key]
            rows.append({"object": "embedding", "index": index, "embedding": orjson.Fragment(item.embedding)})
        return rows

    def _embeddings(self, answer: dict[str, Any]) -> list[bytes] | None:
        """Each item sent's `embedding` as JSON, in the order sent (by `index`), or None."""
        data = answer.get("data")
        n = len(self.missing)
        if not isinstance(data, list) or len(data) != n:
            return None
        out: list[bytes | None] = [None] * n
        for row in data:
            if not isinstance(row, dict):
                return None
            index, embedding = row.get("index"), row.get("embedding")
            if type(index) is not int or not 0 <= index < n or out[index] is not None \
                    or not isinstance(embedding, (list, str)):
                return None
            out[index] = orjson.dumps(embedding)
        return out  # type: ignore[return-value]  # every index was filled once


class EmbeddingsCache:
    def __init__(self, config: CacheConfig, store: Store):
        self.config = config
        self.store = store

    async def consult(self, route: str, targets: list[str], rules: RouteCacheConfig, payload: dict[str, Any],
                      headers: Mapping[str, str], tenant: str) -> Lookup | Bypass:
        """The items' lookup, or why the cache is not for this request. The same rules as chat's:
        the route's cache on, `cacheable` not never (embeddings are deterministic), and the
        `Cache-Control` and `x-gateway-cache-ttl` request headers."""
        if not rules.enabled:
            return Bypass("route cache off")
        if (rules.cacheable or self.config.cacheable) == "never":
            return Bypass("cacheable: never")
        encoding = payload.get("encoding_format")
        encoding = "float" if encoding is None else encoding   # OpenAI's default
        if encoding not in ENCODINGS:
            return Bypass("encoding_format not float or base64")
        items = input_items(payload.get("input"))
        if items is None:
            return Bypass("input not strings or token arrays")
        asked = controls(headers, rules, self.config.exact)
        if isinstance(asked, Bypass):
            return asked
        lookup, store, ttl_s = asked
        keys = item_keys(route, targets, tenant, payload, encoding, items)
        found: dict[str, Item] = {}
        if lookup:
            distinct = list(dict.fromkeys(keys))
            check = self.store.shared
            for key, value in zip(distinct, await self.store.get_many(distinct)):
                if value is None:
                    continue
                item = Item.unpack(value, check)
                if item is None:
                    self.store.errors += 1   # garbage in the store is a miss
                else:
                    found[key] = item
            hits = sum(1 for key in keys if key in found)
            counts = {"hit": hits, "miss": len(keys) - hits}
        else:
            counts = {"bypass": len(keys)}
        return Lookup(items, keys, found, store, ttl_s, counts)

    async def put(self, lookup: Lookup) -> None:
        if not lookup.store:
            return
        new = lookup.to_store()
        if new:
            shared = self.store.shared
            await self.store.set_many([(key, item.pack() if shared else item) for key, item in new], lookup.ttl_s)

    async def count(self) -> int | None:
        """Items held, for a store of this process's own; None for Redis (its key count is the
        exact layer's figure, embedding items included)."""
        return None if self.store.shared else await self.store.count()

    async def close(self) -> None:
        await self.store.close()
