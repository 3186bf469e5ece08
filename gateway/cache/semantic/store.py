"""The vector side of the semantic cache: one collection, one point per (partition, question).

Every point carries its partition and expiry in the payload, and every read filters on both (with
payload indexes), so a question is only ever matched inside its own partition (which includes the
tenant) and an expired answer is never served even before the sweep deletes it.

Two homes, one interface:
- EdgeStore: Qdrant's own engine (`qdrant-edge-py`) in a helper process of the gateway's
  (gateway/edge_worker.py), in memory (a temporary directory, removed at close) or on a path; the
  default, for one process.
- ServerStore (server_store.py): a Qdrant server (`url:`) through `qdrant-client`, shared by
  replicas and workers; imported only then (the client costs the process about 54 MiB).
"""

from __future__ import annotations

import asyncio
import collections
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ... import edge_worker
from ...config import QdrantConfig
from .points import READ, Candidate, StoreError, VectorStore, candidate, payload, point_id

__all__ = ["Candidate", "EdgeStore", "StoreError", "VectorStore", "open_store"]


def open_store(config: QdrantConfig, collection: str, timeout_s: float) -> VectorStore:
    if config.url:
        from .server_store import ServerStore

        return ServerStore(config.url, config.api_key, collection, timeout_s)
    return EdgeStore(config.path, collection)


# ---- in a helper process ------------------------------------------------------------------------

class Helper:
    """The helper process (gateway/edge_worker.py) and the gateway's end of its socket: calls are
    written in order and answered in order, so each answer resolves the oldest waiting call.
    A caller that gave up (a timeout) leaves its future behind; its answer is read and dropped."""

    def __init__(self, process: subprocess.Popen[bytes], reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.process, self.reader, self.writer = process, reader, writer
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.reading = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls) -> "Helper":
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen([sys.executable, "-m", "gateway.edge_worker", str(theirs.fileno())],
                                       pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        return cls(process, reader, writer)

    @property
    def alive(self) -> bool:
        return not self.reading.done()

    async def call(self, name: str, *args: Any) -> Any:
        if not self.alive:
            raise StoreError("the semantic store's helper process is gone")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.writer.write(edge_worker.frame((name, args)))
        ok, value = await future
        if not ok:
            raise StoreError(f"the semantic store: {value}")
        return value

    async def _read(self) -> None:
        try:
            while True:
                header = await self.reader.readexactly(edge_worker.HEADER.size)
                answer = pickle.loads(await self.reader.readexactly(edge_worker.HEADER.unpack(header)[0]))
                future = self.waiting.popleft()
                if not future.done():
                    future.set_result(answer)
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass  # the helper ended (closed, or died)
        finally:
            gone = StoreError("the semantic store's helper process ended")
            for future in self.waiting:
                if not future.done():
                    future.set_exception(gone)
            self.waiting.clear()

    async def stop(self) -> None:
        self.writer.close()  # the helper reads the end of its input and exits
        try:
            await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, self.process.wait), 5.0)
        except asyncio.TimeoutError:
            self.process.kill()
        self.reading.cancel()


class EdgeStore:
    """Qdrant Edge: the server's engine (segments, payload indexes, filtered search), in one helper
    process that the gateway's process starts and talks to over a socket.

    Its calls are synchronous and hold the GIL for as long as they run (a filtered search is a
    scan of the partition's vectors: 5-7 ms at 10,000 entries on a slow 2-core machine), so in the
    gateway's process they would stall the event loop; through the helper they cost the loop a
    pickled message each way. The helper answers one call at a time, in order. If it dies, the
    calls in flight fail (misses, counted) and the next call starts a new one on the same
    directory (what the old one wrote; a temporary shard it left unreadable starts empty). `optimize()` (building HNSW) is never called:
    it takes seconds at 10,000 entries and minutes at 100,000, and the helper would answer nothing
    meanwhile; a partition of many tens of thousands of entries belongs on a Qdrant server.
    """

    def __init__(self, path: str | None, collection: str):
        self._temporary = path is None
        root = Path(tempfile.mkdtemp(prefix="gateway-semantic-")) if path is None else Path(path)
        self.path = root / collection
        self._dim: int | None = None
        self._helper: Helper | None = None

    async def _call(self, name: str, *args: Any) -> Any:
        if self._helper is None or not self._helper.alive:
            await self._start()
        assert self._helper is not None
        return await self._helper.call(name, *args)

    async def _start(self) -> None:
        if self._dim is None:
            raise StoreError("the semantic store is not open")
        if self._helper is not None:
            await self._helper.stop()
            self._helper = None
        for attempt in range(2):
            helper = await Helper.start()
            try:
                await helper.call("open_shard", str(self.path), self._dim, not self._temporary)
            except StoreError as exc:
                await helper.stop()
                if "vector size" in str(exc):
                    raise StoreError(f"the semantic cache at {self.path} holds vectors of another size than the "
                                     f"embedder's {self._dim}: name another collection for this embedder") from None
                if not self._temporary or attempt:
                    raise
                # A helper that died mid-write can leave a temporary shard unreadable: start it afresh.
                shutil.rmtree(self.path, ignore_errors=True)
                continue
            self._helper = helper
            return

    async def ensure_collection(self, dim: int) -> None:
        self._dim = dim
        await self._call("count")  # starts the helper, which opens (or creates) the shard

    async def search(self, partition: str, vector: list[float], limit: int, threshold: float,
                     now: float | None = None) -> list[Candidate]:
        found = await self._call("search", partition, vector, limit, threshold,
                                 now if now is not None else time.time(), READ)
        return [candidate(pid, point_payload, score) for pid, point_payload, score in found]

    async def upsert(self, partition: str, text: str, vector: list[float], answer: dict[str, Any],
                     expires_at: float) -> None:
        await self._call("upsert", point_id(partition, text), vector, payload(partition, text, answer, expires_at))

    async def sweep(self, now: float | None = None) -> None:
        await self._call("sweep", now if now is not None else time.time())

    async def count(self) -> int:
        return await self._call("count")

    async def close(self) -> None:
        helper, self._helper = self._helper, None
        if helper is not None:
            try:
                if helper.alive:
                    await asyncio.wait_for(helper.call("close", not self._temporary), 10.0)
            except (StoreError, asyncio.TimeoutError):
                pass  # a helper that cannot flush now keeps what it flushed before
            finally:
                await helper.stop()
        if self._temporary:
            shutil.rmtree(self.path.parent, ignore_errors=True)
