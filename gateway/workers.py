"""`gateway serve --workers N`: one scrape, every worker's figures.

Each worker counts in its own memory (per request the observer only adds to dicts), and a scrape
reaches one worker. So under --workers > 1, `gateway serve` makes a directory for the run before
uvicorn starts the workers and names it in GATEWAY_WORKERS_DIR; each worker listens there on a Unix
socket, `<pid>-<token>.sock`. The worker a scrape reaches asks every other one for a snapshot of
its figures (1 s for all of them), merges them with its own, and renders the sum. Nothing of this
runs per request, and with one worker (no GATEWAY_WORKERS_DIR) no socket is opened.

Counters must never go down while the run lasts (Prometheus would read a reset), so a worker's
counts outlive its answers:
- each snapshot a worker makes for a scrape is also kept in `<id>.last` (written before it is
  sent, so the file holds at least what any scrape exported of that worker);
- a worker that does not answer in time is counted (`gateway_workers_unanswered_total`), logged,
  and represented by its `<id>.last` counts;
- a worker that stops (SIGTERM, a rolling restart on SIGHUP, one less on SIGTTOU) adds its final
  counts to `retired.pkl` and then closes its socket; a worker found dead (its socket refuses:
  SIGKILL, out of memory, a crash) has its `<id>.last` added there by the scrape that finds it,
  so only what it counted after the last scrape is lost;
- a scrape asks first and reads `retired.pkl` after, and counts each worker once: live, or last,
  or retired.

Snapshots cross as pickles (DDSketches included): the directory is the user's own (mode 0700), and
whoever can put a socket in it can already run code as the gateway.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import pickle
import shutil
import socket
import struct
import tempfile
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

log = logging.getLogger("gateway.workers")

ENV = "GATEWAY_WORKERS_DIR"
ASK_TIMEOUT_S = 1.0
PREFIX = "gateway-workers-"
RETIRED, LOCK = "retired.pkl", "retired.lock"
HEADER = struct.Struct("!I")  # the length of the pickle that follows
ASK = b"?"


# ---- in `gateway serve`, before uvicorn starts the workers -------------------------------------

def make_run_dir(parent: str | None = None) -> str:
    """A new, empty directory for this run's sockets (mode 0700, named after this process). The
    directories that earlier runs left behind (a `gateway serve` that was killed) are removed
    first: those whose process is gone and where no socket answers (a /tmp shared between pid
    namespaces may hold a live run whose pid means nothing here)."""
    parent = parent or tempfile.gettempdir()
    if len(parent) > 60:  # a Unix socket's path holds 107 bytes at most
        parent = "/tmp"
    for old in Path(parent).glob(PREFIX + "*"):
        pid = _pid(old.name[len(PREFIX):])
        if pid is not None and not _alive(pid) and not any(_listening(p) for p in old.glob("*.sock")):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent)


def remove_run_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ---- in each worker --------------------------------------------------------------------------

class Workers:
    """This worker's socket, and its questions to the others at scrape time.

    `snapshot` gives this worker's figures (what a peer asks for); `merge` adds snapshots (for
    `retired.pkl`). Both come from gateway/metrics.py, which holds this object as its `peers`."""

    def __init__(self, directory: str | os.PathLike[str], snapshot: Callable[[], Awaitable[Any]],
                 merge: Callable[[Iterable[Any]], Any], timeout_s: float = ASK_TIMEOUT_S):
        self.dir = Path(directory)
        self.pid = os.getpid()
        self.id = f"{self.pid}-{os.urandom(4).hex()}"  # a pid can come back; this id cannot
        self.path = self.dir / f"{self.id}.sock"
        self.snapshot, self.merge, self.timeout_s = snapshot, merge, timeout_s
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        # Bound and listening under a temporary name, then renamed: a socket under its final
        # name always answers, so one that refuses belongs to a worker that is gone.
        temporary = self.dir / f".{self.id}.tmp"
        self._server = await asyncio.start_unix_server(self._answer, path=str(temporary))
        os.replace(temporary, self.path)

    async def gather(self) -> tuple[list[Any], int]:
        """The other workers' snapshots (live, or their last counts when they did not answer in
        time), the stopped workers' counts, and how many live workers did not answer."""
        peers = [p for p in self.dir.glob("*.sock") if p != self.path]
        asked = {asyncio.ensure_future(self._ask(p)): p for p in peers}
        done: set[asyncio.Future[Any]] = set()
        if asked:
            done, pending = await asyncio.wait(asked, timeout=self.timeout_s)
            for task in pending:
                task.cancel()
        found: dict[str, Any] = {}
        unanswered = 0
        for task, path in asked.items():
            worker = path.stem
            error = task.exception() if task in done else None
            if task in done and error is None:
                found[worker] = task.result()
            elif isinstance(error, FileNotFoundError):
                pass  # it stopped between the listing and the question: it is in retired.pkl
            elif isinstance(error, ConnectionRefusedError):
                # Nothing listens: the worker died without retiring (a live one, even a stuck
                # one, has its socket listening; a stopping one removes it before closing).
                log.warning("worker %s is gone; its counts as of its last scrape stay in the totals", worker)
                self._retire(worker, None)
            else:
                unanswered += 1
                reason = f"no answer within {self.timeout_s:g} s" if task not in done else repr(error)
                log.warning("worker %s did not answer (%s): its counts as of its last scrape stand in", worker, reason)
                last = self._read(self.dir / f"{worker}.last")
                if last is not None:
                    found[worker] = last.counts_only()
        # Read after asking: a worker retires before it closes its socket, so one that stopped
        # while being asked is here, and one that answered and retired since is counted once.
        retired_ids, retired = self._read_retired()
        snapshots = [s for worker, s in found.items() if worker not in retired_ids]
        if retired is not None:
            snapshots.append(retired)
        return snapshots, unanswered

    def keep(self, snapshot: Any) -> bytes:
        """This worker's snapshot for a scrape, kept as its last counts; the pickle, to send."""
        body = pickle.dumps(snapshot, pickle.HIGHEST_PROTOCOL)
        try:
            temporary = self.dir / f".{self.id}.last"
            temporary.write_bytes(body)
            os.replace(temporary, self.dir / f"{self.id}.last")
        except OSError as exc:
            log.warning("could not keep worker %s's last counts: %s", self.id, exc)
        return body

    async def retire(self, final: Any) -> None:
        """This worker stops: its final counts join retired.pkl, then its socket closes."""
        self._retire(self.id, final)
        await self.close()

    async def close(self) -> None:
        self.path.unlink(missing_ok=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _retire(self, worker: str, final: Any) -> None:
        """Add a worker's final counts (None: its last ones) to retired.pkl, once."""
        last = self.dir / f"{worker}.last"
        try:
            with open(self.dir / LOCK, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # workers stopping together, scrapes finding one dead
                ids, retired = self._read_retired()
                if worker not in ids:
                    if final is None:
                        final = self._read(last)
                    counts = [] if final is None else [final.counts_only()]
                    merged = self.merge(counts if retired is None else [retired, *counts])
                    temporary = self.dir / f".{worker}.retired"
                    temporary.write_bytes(pickle.dumps((ids | {worker}, merged), pickle.HIGHEST_PROTOCOL))
                    os.replace(temporary, self.dir / RETIRED)
                last.unlink(missing_ok=True)
                (self.dir / f"{worker}.sock").unlink(missing_ok=True)
        except OSError as exc:  # the run directory is gone (the run is ending): nothing to keep
            log.warning("could not keep worker %s's counts: %s", worker, exc)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if await asyncio.wait_for(reader.read(1), self.timeout_s) == ASK:
                body = self.keep(await self.snapshot())
                writer.write(HEADER.pack(len(body)) + body)
                await writer.drain()
        except (OSError, asyncio.TimeoutError):
            pass  # the asker gave up; it counts this worker as unanswered
        except Exception:
            log.exception("could not answer a scrape's question")
        finally:
            writer.close()

    async def _ask(self, path: Path) -> Any:
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(ASK)
            await writer.drain()
            size = HEADER.unpack(await reader.readexactly(HEADER.size))[0]
            return pickle.loads(await reader.readexactly(size))
        finally:
            writer.close()

    def _read_retired(self) -> tuple[frozenset[str], Any]:
        kept = self._read(self.dir / RETIRED)
        return (frozenset(), None) if kept is None else (frozenset(kept[0]), kept[1])

    @staticmethod
    def _read(path: Path) -> Any:
        try:
            return pickle.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except Exception as exc:
            log.warning("could not read %s: %r", path.name, exc)
            return None


def _pid(name: str) -> int | None:
    head = name.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _listening(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            s.connect(str(path))
        return True
    except OSError:
        return False


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True  # not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
