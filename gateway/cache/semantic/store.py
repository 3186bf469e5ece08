"""The vector side of the semantic cache: one collection, one point per (partition, question).

Every point carries its partition and expiry in the payload, and every read filters on both (with
payload indexes), so a question is only ever matched inside its own partition (which includes the
tenant) and an expired answer is never served even before the sweep deletes it.

Two homes, one interface:
- EdgeStore: Qdrant's own engine in the gateway's process (`qdrant-edge-py`), in memory (a
  temporary directory, removed at close) or on a path; the default, for one process.
- ServerStore (server_store.py): a Qdrant server (`url:`) through `qdrant-client`, shared by
  replicas and workers; imported only then (the client costs the process about 54 MiB).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import qdrant_edge as edge

from ...config import QdrantConfig
from .points import READ, Candidate, StoreError, VectorStore, candidate, payload, point_id

__all__ = ["Candidate", "EdgeStore", "StoreError", "VectorStore", "open_store"]


def open_store(config: QdrantConfig, collection: str, timeout_s: float) -> VectorStore:
    if config.url:
        from .server_store import ServerStore

        return ServerStore(config.url, config.api_key, collection, timeout_s)
    return EdgeStore(config.path, collection)


# ---- in the gateway's process ---------------------------------------------------------------------

class EdgeStore:
    """Qdrant Edge: the server's engine (segments, payload indexes, filtered search) in-process.

    Its calls are synchronous and hold the GIL for as long as they run, so they are made on the
    event loop directly (a thread would not let the loop run meanwhile): a filtered search of a
    partition is a brute-force scan of that partition's vectors, 0.6 ms at 10,000 entries (6 ms
    at 100,000). `optimize()` (building HNSW) also holds the GIL, for seconds, and is never
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
                                                    with_payload=READ, score_threshold=threshold))
        return [candidate(point.id, point.payload, point.score) for point in found]

    async def upsert(self, partition: str, text: str, vector: list[float], answer: dict[str, Any],
                     expires_at: float) -> None:
        point = edge.Point(point_id(partition, text), vector, payload(partition, text, answer, expires_at))
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
