"""Open-loop load: requests sent on a fixed schedule, whether or not the earlier ones were answered.

wrk is a closed loop: a connection sends its next request only once the last one was answered, so
a target that stalls for 100 ms is simply asked less meanwhile and the stall shows in a handful of
samples (coordinated omission). Here request i is due at t0 + i / rate and its latency runs from
that due time, not from when it was written: a stall counts for every request that should have gone
out during it, as it does for users who keep arriving. The generator's own lateness (dispatch after
the due time) is reported beside the achieved rate: a run with a large lag measured the generator,
not the target.

HTTP/1.1 keep-alive over raw asyncio sockets (uvloop), one request per connection at a time (no
pipelining): a due request takes an idle connection, or opens a new one (the connect is inside its
latency), up to --max-conns; beyond that it waits for one, its clock running. The garbage collector
is off (nothing here makes cycles) so that it never pauses the schedule.

  python bench/openloop.py --url http://127.0.0.1:P/v1/chat/completions --rate 2000 --duration 10 \\
      --body body.json [--unique] [--header 'Name: value'] [--warmup 2]

`--unique`: `@N@` in the body becomes a number no other request of the run (nor of another run)
has, so that every request misses a cache.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import sys
import time
from collections import Counter, deque
from pathlib import Path
from urllib.parse import urlparse

from stats import pct  # bench/ is on sys.path when run as a script

HEAD_END = b"\r\n\r\n"
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.I)
CHUNKED = re.compile(rb"\r\ntransfer-encoding:[ \t]*chunked", re.I)
CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.I)


class Conn(asyncio.Protocol):
    """One keep-alive connection: one request at a time, the answer read to its last byte."""

    def __init__(self, gen: "Generator"):
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.end = 0          # where the answer ends in buf: 0 unknown yet, -1 chunked, -2 at close
        self.status = 0
        self.keep = True
        self.request: tuple[int, float] | None = None  # (index, due) of the request in flight
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, index: int, due: float) -> None:
        self.request = (index, due)
        self.buf.clear()
        self.end = 0
        self.transport.write(self.gen.request_bytes(index))

    def data_received(self, data: bytes) -> None:
        if self.request is None:
            return  # nothing asked: not an answer of ours
        self.buf += data
        if not self.end:
            head_end = self.buf.find(HEAD_END)
            if head_end < 0:
                return
            head = bytes(self.buf[:head_end + 2])
            self.status = int(head[9:12])
            self.keep = not CLOSE.search(head)
            m = CONTENT_LENGTH.search(head)
            self.end = head_end + 4 + int(m.group(1)) if m else (-1 if CHUNKED.search(head) else -2)
        if (self.end > 0 and len(self.buf) >= self.end) or (self.end == -1 and self.buf.endswith(b"0\r\n\r\n")):
            self.gen.answered(self, "ok" if self.status == 200 else f"status {self.status}")

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.request is not None:
            if self.end == -2 and self.status:
                self.gen.answered(self, "ok" if self.status == 200 else f"status {self.status}")
            else:
                self.gen.answered(self, "connection lost")


class Generator:
    def __init__(self, args):
        self.args = args
        url = urlparse(args.url)
        if url.hostname not in ("127.0.0.1", "localhost"):
            raise SystemExit(f"refusing non-loopback target {args.url}")
        self.host, self.port = url.hostname, url.port
        body = Path(args.body).read_bytes()
        extra = "".join(f"{h.strip()}\r\n" for h in args.header or [])
        self.head = (f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
                     f"{extra}Content-Length: ").encode()
        if args.unique:  # a prefix of this run's own, then the request's number
            self.prefix = os.urandom(4).hex().encode() + b"-"
            self.parts = body.split(b"@N@")
        else:
            self.fixed = self.head + str(len(body)).encode() + HEAD_END + body
        self.warm = round(args.warmup * args.rate)
        self.total = self.warm + round(args.duration * args.rate)
        self.idle: list[Conn] = []           # most recently used last: the hot set stays small
        self.waiting: deque[tuple[int, float]] = deque()
        self.busy: set[Conn] = set()
        self.opening = 0
        self.opened = 0
        self.latency: list[float] = []       # measured requests only, from their due time
        self.lag: list[float] = []           # dispatch time minus due time, measured requests
        self.outcomes: Counter = Counter()
        self.waited = 0                      # measured requests that found no free connection
        self.first_due = self.last_sent = 0.0
        self.finished = 0
        self.all_done: asyncio.Future | None = None

    def request_bytes(self, index: int) -> bytes:
        if not self.args.unique:
            return self.fixed
        body = (self.prefix + str(index).encode()).join(self.parts)
        return self.head + str(len(body)).encode() + HEAD_END + body

    def due(self, index: int) -> float:
        return self.t0 + index / self.args.rate

    def dispatch(self, index: int, due: float) -> None:
        if index >= self.warm:
            self.lag.append(time.perf_counter() - due)
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                self.busy.add(conn)
                conn.send(index, due)
                return
        if len(self.busy) + self.opening < self.args.max_conns:
            self.opening += 1
            asyncio.ensure_future(self.open(index, due))
        else:
            if index >= self.warm:
                self.waited += 1
            self.waiting.append((index, due))

    async def open(self, index: int, due: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: Conn(self), self.host, self.port)
        except OSError as exc:
            self.opening -= 1
            self.done(index, due, f"connect: {type(exc).__name__}")
            return
        self.opening -= 1
        self.opened += 1
        self.busy.add(conn)
        conn.send(index, due)

    def answered(self, conn: Conn, outcome: str) -> None:
        index, due = conn.request
        conn.request = None
        self.busy.discard(conn)
        if outcome != "ok" or not conn.keep:
            conn.closed = True
            conn.transport.close()
        self.done(index, due, outcome)
        if conn.closed:
            if self.waiting:  # its place goes to a new connection
                self.dispatch_waiting()
        elif self.waiting:
            self.busy.add(conn)
            conn.send(*self.waiting.popleft())
        else:
            self.idle.append(conn)

    def dispatch_waiting(self) -> None:
        index, due = self.waiting.popleft()
        self.opening += 1
        asyncio.ensure_future(self.open(index, due))

    def done(self, index: int, due: float, outcome: str) -> None:
        now = time.perf_counter()
        if index >= self.warm:
            self.outcomes[outcome] += 1
            if outcome == "ok":
                self.latency.append(now - due)
        self.finished += 1
        if self.finished == self.total and self.all_done and not self.all_done.done():
            self.all_done.set_result(None)

    def expire(self, now: float) -> None:
        """Requests older than --timeout: their connection is closed, the request counted as a timeout."""
        limit = now - self.args.timeout
        for conn in [c for c in self.busy if c.request and c.request[1] < limit]:
            index, due = conn.request
            conn.request = None
            conn.closed = True
            conn.transport.close()
            self.busy.discard(conn)
            self.done(index, due, "timeout")
            if self.waiting:
                self.dispatch_waiting()
        while self.waiting and self.waiting[0][1] < limit:
            self.done(*self.waiting.popleft(), "timeout")

    async def run(self) -> dict:
        loop = asyncio.get_running_loop()
        self.all_done = loop.create_future()
        self.t0 = time.perf_counter() + 0.05
        self.first_due = self.due(self.warm)
        index, next_expire = 0, 0.0
        while index < self.total:
            now = time.perf_counter()
            if now >= next_expire:
                self.expire(now)
                next_expire = now + 0.1
            due = self.due(index)
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while index < self.total and self.due(index) <= now:
                self.dispatch(index, self.due(index))
                index += 1
            self.last_sent = now
        schedule_end = time.perf_counter()
        drain_until = schedule_end + self.args.drain
        while self.finished < self.total and time.perf_counter() < drain_until:
            self.expire(time.perf_counter())
            try:
                await asyncio.wait_for(asyncio.shield(self.all_done), 0.1)
            except asyncio.TimeoutError:
                pass
        unfinished = sum(1 for c in self.busy if c.request and c.request[0] >= self.warm)
        unfinished += sum(1 for i, _ in self.waiting if i >= self.warm) + self.opening
        if unfinished:
            self.outcomes["unfinished at the end"] += unfinished
        for conn in list(self.busy) + self.idle:
            conn.transport.close()
        measured = self.total - self.warm
        window = max(self.last_sent - self.first_due, 1e-9)
        ok = self.outcomes.get("ok", 0)
        ms = [x * 1000 for x in self.latency]
        lag = [x * 1000 for x in self.lag]
        return {
            "rate": self.args.rate, "duration_s": self.args.duration, "scheduled": measured,
            "sent_rate": (len(self.lag) - 1) / window if len(self.lag) > 1 else 0.0,
            "achieved_rps": ok / self.args.duration, "ok": ok,
            "errors": sum(n for k, n in self.outcomes.items() if k != "ok"),
            "error_kinds": {k: n for k, n in self.outcomes.items() if k != "ok"},
            "latency_ms": {"n": len(ms), "p50": pct(ms, 50), "p90": pct(ms, 90), "p99": pct(ms, 99),
                           "p999": pct(ms, 99.9), "max": max(ms) if ms else None},
            "lag_ms": {"p50": pct(lag, 50), "p99": pct(lag, 99), "p999": pct(lag, 99.9),
                       "max": max(lag) if lag else None},
            "waited_for_connection": self.waited, "connections": self.opened,
            "drain_s": time.perf_counter() - schedule_end,
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--body", required=True, help="file with the JSON body")
    p.add_argument("--header", action="append", help="extra header 'Name: value'")
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--duration", type=float, default=10, help="measured seconds")
    p.add_argument("--warmup", type=float, default=2, help="seconds at the same rate before, not measured")
    p.add_argument("--unique", action="store_true", help="`@N@` in the body: a number no request repeats")
    p.add_argument("--max-conns", type=int, default=4096)
    p.add_argument("--timeout", type=float, default=10, help="a request unanswered this long after its due time "
                                                              "is a timeout")
    p.add_argument("--drain", type=float, default=5, help="after the schedule, wait at most this long for answers")
    args = p.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    gc.disable()
    result = asyncio.run(Generator(args).run())
    sys.stdout.write("BENCH_JSON " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
