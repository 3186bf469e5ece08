"""The semantic cache's Qdrant Edge shard, in a helper process of its own: cache/semantic/store.py
starts `python -m gateway.edge_worker FD` and sends it every call over a socket pair (FD is the
helper's end), one length-prefixed pickle per call and per answer, answered in order.

Qdrant Edge's calls hold the GIL for as long as they run: a filtered search of 10,000 entries is a
scan of their vectors (5-7 ms on a slow 2-core machine, ~70 ms at 100,000), and in the gateway's
process that would stall the event loop, and every other request and stream with it, for as long.
Here it stalls only this process.

It lives outside `gateway.cache` so that the helper imports qdrant_edge, the standard library and
gateway/osname.py only (about 15 MiB and 0.1 s to start, against 60 MiB and a second for the gateway's package).
Its functions take and return plain values (ids, payload dicts, floats), and raise only
RuntimeError, so that everything crosses the pipe. The helper ends when the gateway closes its end
(or dies): it never outlives it.
"""

from __future__ import annotations

import pickle
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import Any

import qdrant_edge as edge

from .osname import name_this_thread

_shard: Any = None


def _guarded(call: Any) -> Any:
    try:
        return call()
    except RuntimeError:
        raise
    except Exception as exc:  # the engine's own exception types may not cross the pipe
        raise RuntimeError(f"{type(exc).__name__}: {exc}") from None


def open_shard(path: str, dim: int, on_disk_payload: bool) -> None:
    """Load the shard at `path`, or create it with the partition and expiry indexes."""
    global _shard
    config = edge.EdgeConfig(vectors={"": edge.EdgeVectorParams(size=dim, distance=edge.Distance.Cosine)},
                             on_disk_payload=on_disk_payload)
    root = Path(path)
    if (root / "edge_config.json").exists():
        _shard = _guarded(lambda: edge.EdgeShard.load(str(root), config))
        return
    root.mkdir(parents=True, exist_ok=True)

    def create() -> Any:
        shard = edge.EdgeShard.create(str(root), config)
        shard.update(edge.UpdateOperation.create_field_index("partition", edge.PayloadSchemaType.Keyword))
        shard.update(edge.UpdateOperation.create_field_index("expires_at", edge.PayloadSchemaType.Float))
        return shard

    _shard = _guarded(create)


def search(partition: str, vector: list[float], limit: int, threshold: float, now: float,
           read: list[str]) -> list[tuple[Any, dict[str, Any] | None, float]]:
    # The partition is a filter of the search; the expiry is checked on what it found: a range
    # condition as well doubled the cost of a search (4.0 against 2.5 ms at 10,000 entries). An
    # expired entry can then take the place of a live one among the top `limit` (a miss, until the
    # sweep deletes it), but is never returned.
    mine = edge.Filter(must=[edge.FieldCondition(key="partition", match=edge.MatchValue(partition))])
    request = edge.QueryRequest(limit=limit, query=edge.Query.Nearest(vector), filter=mine,
                                with_payload=[*read, "expires_at"], score_threshold=threshold)
    return [(p.id, p.payload, p.score) for p in _guarded(lambda: _shard.query(request)) if _live(p.payload, now)]


def _live(payload: dict[str, Any] | None, now: float) -> bool:
    expires_at = (payload or {}).get("expires_at")
    return isinstance(expires_at, (int, float)) and expires_at > now


def upsert(point_id: str, vector: list[float], payload: dict[str, Any]) -> None:
    _guarded(lambda: _shard.update(edge.UpdateOperation.upsert_points([edge.Point(point_id, vector, payload)])))


def sweep(now: float) -> None:
    expired = edge.Filter(must=[edge.FieldCondition(key="expires_at", range=edge.RangeFloat(lte=now))])
    _guarded(lambda: _shard.update(edge.UpdateOperation.delete_points_by_filter(expired)))


def count() -> int:
    return int(_guarded(lambda: _shard.count(edge.CountRequest(exact=True))))


def close(flush: bool) -> None:
    global _shard
    if _shard is not None:
        shard, _shard = _shard, None
        _guarded(lambda: (shard.flush() if flush else None, shard.close()))


CALLS = {f.__name__: f for f in (open_shard, search, upsert, sweep, count, close)}
HEADER = struct.Struct("!I")  # the length of the pickle that follows


def frame(value: Any) -> bytes:
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def _read_exactly(stream: Any, size: int) -> bytes | None:
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def serve(fd: int) -> None:
    """Answer calls until the other end closes: each (name, args) gets (True, result) or (False, message)."""
    sock = socket.socket(fileno=fd)
    reader, writer = sock.makefile("rb"), sock.makefile("wb")
    while (header := _read_exactly(reader, HEADER.size)) is not None:
        body = _read_exactly(reader, HEADER.unpack(header)[0])
        if body is None:
            break
        name, args = pickle.loads(body)
        try:
            answer = (True, CALLS[name](*args))
        except Exception as exc:
            answer = (False, str(exc))
        writer.write(frame(answer))
        writer.flush()
        if name == "close":
            break


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group: the gateway stops the helper (after a flush), not the signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    name_this_thread("gateway-qdrant")   # the main thread: the process, in `top`
    serve(int(sys.argv[1]))
