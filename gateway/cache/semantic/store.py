"""The vector side of the semantic cache: one collection, one point per (partition, question).

Every point carries its partition and expiry in the payload, and every read filters on both (with
payload indexes), so a question is only ever matched inside its own partition (which includes the
tenant) and an expired answer is never served even before the sweep deletes it.

Two homes, one interface:
- EdgeStore: Qdrant's own engine in the gateway's process (`qdrant-edge-py`), in memory (a
  temporary directory, removed at close) or on a path; the default, for one process.
- ServerStore: a Qdrant server (`url:`) through `qdrant-client`, shared by replicas and workers.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import qdrant_edge as edge
from qdrant_client import AsyncQdrantClient, models

from ...config import QdrantConfig

_POINT_NAMESPACE = uuid.UUID("5f0c1c4e-8a58-4a9b-9d0e-2f6f2b8b7a11")
_READ = ["text", "answer"]


@dataclass(frozen=True, slots=True)
class Candidate:
    text: str            # the stored question
    answer: dict[str, Any]
    score: float         # cosine similarity


class StoreError(Exception):
    """The store answered something the cache cannot use (a collection of another dimension, a bad payload)."""


class VectorStore(Protocol):
    async def ensure_collection(self, dim: int) -> None:
        """Open or create the collection for vectors of `dim`; StoreError if it holds another size."""

    async def search(self, partition: str, vector: list[float], limit: int, threshold: float,
                     now: float | None = None) -> list[Candidate]: ...

    async def upsert(self, partition: str, text: str, vector: list[float], answer: dict[str, Any],
                     expires_at: float) -> None: ...

    async def sweep(self, now: float | None = None) -> None:
        """Delete the expired points."""

    async def count(self) -> int: ...

    async def close(self) -> None: ...


def point_id(partition: str, text: str) -> str:
    # Deterministic: storing the same question again in a partition replaces its answer.
    return str(uuid.uuid5(_POINT_NAMESPACE, partition + "\x00" + text))


def open_store(config: QdrantConfig, collection: str, timeout_s: float) -> VectorStore:
    if config.url:
        client = AsyncQdrantClient(url=config.url, api_key=config.api_key, timeout=max(1, int(timeout_s + 0.999)))
        return ServerStore(client, collection)
    return EdgeStore(config.path, collection)


def _candidate(point_id: Any, payload: dict[str, Any] | None, score: float) -> Candidate:
    payload = payload or {}
    text, answer = payload.get("text"), payload.get("answer")
    if not isinstance(text, str) or not isinstance(answer, dict):
        raise StoreError(f"point {point_id} has no usable text and answer")
    return Candidate(text, answer, float(score))


def _payload(partition: str, text: str, answer: dict[str, Any], expires_at: float) -> dict[str, Any]:
    return {"partition": partition, "text": text, "answer": answer, "expires_at": expires_at}


# ---- in the gateway's process ---------------------------------------------------------------------

class EdgeStore:
    """Qdrant Edge: the server's engine (segments, payload indexes, filtered search) in-process.

    Its calls are synchronous and hold the GIL for as long as they run, so they are made on the
    event loop directly (a thread would not let the loop run meanwhile): a filtered search of a
    partition is a brute-force scan of that partition's vectors, well under a millisecond at
    10,000 entries. `optimize()` (building HNSW) also holds the GIL, for seconds, and is never
    called: a partition of many tens of thousands of entries belongs on a Qdrant server.
    """

    def __init__(self, path: str | None, collection: str):
        self._temporary = path is None
        root = Path(tempfile.mkdtemp(prefix="gateway-semantic-")) if path is None else Path(path)
        self.path = root / collection
        self._shard: Any = None

    def _config(self, dim: int) -> Any:
        # In memory: payloads (the cached answers) in RAM too; on a path: on disk, read when served.
        return edge.EdgeConfig(vectors={"": edge.EdgeVectorParams(size=dim, distance=edge.Distance.Cosine)},
                               on_disk_payload=not self._temporary)

    async def ensure_collection(self, dim: int) -> None:
        config = self._config(dim)
        if (self.path / "edge_config.json").exists():
            try:
                self._shard = edge.EdgeShard.load(str(self.path), config)
            except Exception as exc:
                if "vector size" in str(exc):
                    raise StoreError(f"the semantic cache at {self.path} holds vectors of another size than "
                                     f"the embedder's {dim}: name another collection for this embedder") from None
                raise
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self._shard = edge.EdgeShard.create(str(self.path), config)
        self._shard.update(edge.UpdateOperation.create_field_index("partition", edge.PayloadSchemaType.Keyword))
        self._shard.update(edge.UpdateOperation.create_field_index("expires_at", edge.PayloadSchemaType.Float))

    async def search(self, partition: str, vector: list[float], limit: int, threshold: float,
                     now: float | None = None) -> list[Candidate]:
        live = edge.Filter(must=[
            edge.FieldCondition(key="partition", match=edge.MatchValue(partition)),
            edge.FieldCondition(key="expires_at", range=edge.RangeFloat(gt=now if now is not None else time.time())),
        ])
        found = self._shard.query(edge.QueryRequest(limit=limit, query=edge.Query.Nearest(vector), filter=live,
                                                    with_payload=_READ, score_threshold=threshold))
        return [_candidate(point.id, point.payload, point.score) for point in found]

    async def upsert(self, partition: str, text: str, vector: list[float], answer: dict[str, Any],
                     expires_at: float) -> None:
        point = edge.Point(point_id(partition, text), vector, _payload(partition, text, answer, expires_at))
        self._shard.update(edge.UpdateOperation.upsert_points([point]))

    async def sweep(self, now: float | None = None) -> None:
        expired = edge.Filter(must=[edge.FieldCondition(
            key="expires_at", range=edge.RangeFloat(lte=now if now is not None else time.time()))])
        self._shard.update(edge.UpdateOperation.delete_points_by_filter(expired))

    async def count(self) -> int:
        return self._shard.count(edge.CountRequest(exact=True))

    async def close(self) -> None:
        if self._shard is not None:
            if not self._temporary:
                self._shard.flush()
            self._shard.close()
            self._shard = None
        if self._temporary:
            shutil.rmtree(self.path.parent, ignore_errors=True)


# ---- a Qdrant server ------------------------------------------------------------------------------

def _live(partition: str, now: float) -> models.Filter:
    return models.Filter(must=[
        models.FieldCondition(key="partition", match=models.MatchValue(value=partition)),
        models.FieldCondition(key="expires_at", range=models.Range(gt=now)),
    ])


class ServerStore:
    def __init__(self, client: AsyncQdrantClient, collection: str):
        self.client = client
        self.collection = collection

    async def ensure_collection(self, dim: int) -> None:
        if await self.client.collection_exists(self.collection):
            info = await self.client.get_collection(self.collection)
            size = getattr(info.config.params.vectors, "size", None)
            if size != dim:
                raise StoreError(f"collection {self.collection!r} holds vectors of size {size}, the embedder "
                                 f"makes {dim}: name another collection for this embedder")
            return
        await self.client.create_collection(
            self.collection, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))
        await self.client.create_payload_index(self.collection, "partition", models.PayloadSchemaType.KEYWORD)
        await self.client.create_payload_index(self.collection, "expires_at", models.PayloadSchemaType.FLOAT)

    async def search(self, partition: str, vector: list[float], limit: int, threshold: float,
                     now: float | None = None) -> list[Candidate]:
        response = await self.client.query_points(
            self.collection, query=vector, query_filter=_live(partition, now if now is not None else time.time()),
            limit=limit, score_threshold=threshold, with_payload=_READ)
        return [_candidate(point.id, point.payload, point.score) for point in response.points]

    async def upsert(self, partition: str, text: str, vector: list[float], answer: dict[str, Any],
                     expires_at: float) -> None:
        await self.client.upsert(self.collection, points=[models.PointStruct(
            id=point_id(partition, text), vector=vector, payload=_payload(partition, text, answer, expires_at))])

    async def sweep(self, now: float | None = None) -> None:
        expired = models.Filter(must=[models.FieldCondition(
            key="expires_at", range=models.Range(lte=now if now is not None else time.time()))])
        await self.client.delete(self.collection, points_selector=models.FilterSelector(filter=expired))

    async def count(self) -> int:
        return (await self.client.count(self.collection, exact=True)).count

    async def close(self) -> None:
        await self.client.close()
