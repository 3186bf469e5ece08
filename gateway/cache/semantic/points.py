"""What both homes of the semantic cache's vectors share: the point layout (one per partition and
question, its payload), the candidates a search returns, and the interface the cache uses."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

_POINT_NAMESPACE = uuid.UUID("5f0c1c4e-8a58-4a9b-9d0e-2f6f2b8b7a11")
READ = ["text", "answer"]  # the payload a search returns


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


def candidate(point_id: Any, payload: dict[str, Any] | None, score: float) -> Candidate:
    payload = payload or {}
    text, answer = payload.get("text"), payload.get("answer")
    if not isinstance(text, str) or not isinstance(answer, dict):
        raise StoreError(f"point {point_id} has no usable text and answer")
    return Candidate(text, answer, float(score))


def payload(partition: str, text: str, answer: dict[str, Any], expires_at: float) -> dict[str, Any]:
    return {"partition": partition, "text": text, "answer": answer, "expires_at": expires_at}
