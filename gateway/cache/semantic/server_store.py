"""The semantic cache on a Qdrant server (`url:`), shared by every replica and worker: the same
collection layout and filters as the in-process store, with payload indexes the cache creates."""

from __future__ import annotations

import time
from typing import Any

from qdrant_client import AsyncQdrantClient, models

from .points import READ, Candidate, StoreError, candidate, payload, point_id


def _live(partition: str, now: float) -> models.Filter:
    return models.Filter(must=[
        models.FieldCondition(key="partition", match=models.MatchValue(value=partition)),
        models.FieldCondition(key="expires_at", range=models.Range(gt=now)),
    ])


class ServerStore:
    def __init__(self, url: str, api_key: str | None, collection: str, timeout_s: float):
        self.client = AsyncQdrantClient(url=url, api_key=api_key, timeout=max(1, int(timeout_s + 0.999)))
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
            limit=limit, score_threshold=threshold, with_payload=READ)
        return [candidate(point.id, point.payload, point.score) for point in response.points]

    async def upsert(self, partition: str, text: str, vector: list[float], answer: dict[str, Any],
                     expires_at: float) -> None:
        await self.client.upsert(self.collection, points=[models.PointStruct(
            id=point_id(partition, text), vector=vector, payload=payload(partition, text, answer, expires_at))])

    async def sweep(self, now: float | None = None) -> None:
        expired = models.Filter(must=[models.FieldCondition(
            key="expires_at", range=models.Range(lte=now if now is not None else time.time()))])
        await self.client.delete(self.collection, points_selector=models.FilterSelector(filter=expired))

    async def count(self) -> int:
        return (await self.client.count(self.collection, exact=True)).count

    async def close(self) -> None:
        await self.client.close()
