"""N concurrent SSE streams over raw asyncio sockets: time to first event and to first text, events,
all complete?

The aiohttp client spends about 1 ms of CPU per 20-chunk stream; at 1,000 streams started together
that alone put 380 ms into the measured time to first event against bare nginx. This client writes a
ready-made HTTP/1.1 request and only scans the bytes it gets back (`data: ` events, `[DONE]`), so
what it measures is the server's delay, not its own. One stream per connection (`Connection: close`).
The first event is the role's, with no text; *first text* is the first event whose `content` is not
empty: what a filter that holds text back (output guardrails) delays, and the first event does not show.

  python bench/streamclient.py --url http://127.0.0.1:P/v1/chat/completions --n 1000 [--ramp S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections import Counter
from urllib.parse import urlparse

from stats import dist_ms  # bench/ is on sys.path when run as a script

DATA = b"data: "
DONE = b"data: [DONE]"
TEXT = re.compile(rb'"content": ?"(?!")')  # a delta with text in it


class Stream(asyncio.Protocol):
    def __init__(self, request: bytes, done: asyncio.Future):
        self.request = request
        self.done = done
        self.started = 0.0
        self.first_event: float | None = None
        self.first_text: float | None = None
        self.head = b""
        self.in_body = False
        self.status = 0
        self.events = 0
        self.tail = b""
        self.saw_done = False
        self.error_event = False

    def connection_made(self, transport) -> None:
        self.started = time.perf_counter()
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = int(self.head[9:12])
            data = self.head[end + 4:]
            self.in_body = True
        if not data:
            return
        scan = self.tail + data
        n = scan.count(DATA) - self.tail.count(DATA)
        if n and self.first_event is None:
            self.first_event = now
        if self.first_text is None and TEXT.search(scan):
            self.first_text = now
        self.events += n
        if DONE in scan:
            self.saw_done = True
        if b'data: {"error"' in scan:
            self.error_event = True
        self.tail = scan[-16:]

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(time.perf_counter())


async def run(args) -> dict:
    url = urlparse(args.url)
    if url.hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"refusing non-loopback target {args.url}")
    body = json.dumps({"model": args.model, "stream": True,
                       "messages": [{"role": "user", "content": "Tell me about refunds."}]}).encode()
    extra = "".join(f"{h.strip()}\r\n" for h in args.header or [])
    request = (f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
               f"Accept: text/event-stream\r\nConnection: close\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    loop = asyncio.get_running_loop()
    ttfe: list[float] = []
    ttft_text: list[float] = []
    totals: list[float] = []
    events: Counter = Counter()
    errors: Counter = Counter()
    in_flight = peak = 0
    deadline = loop.time() + args.timeout

    async def one(delay: float) -> None:
        nonlocal in_flight, peak
        if delay:
            await asyncio.sleep(delay)
        done = loop.create_future()
        in_flight += 1
        peak = max(peak, in_flight)
        transport = None
        try:
            transport, proto = await asyncio.wait_for(
                loop.create_connection(lambda: Stream(request, done), url.hostname, url.port),
                max(0.1, deadline - loop.time()))
            ended = await asyncio.wait_for(done, max(0.1, deadline - loop.time()))
        except asyncio.TimeoutError:
            errors["timeout"] += 1
            return
        except OSError as exc:
            errors[type(exc).__name__] += 1
            return
        finally:
            in_flight -= 1
            if transport is not None:
                transport.close()
        if proto.status != 200:
            errors[f"status {proto.status}"] += 1
        elif not proto.saw_done or proto.error_event:
            errors["incomplete"] += 1
        else:
            ttfe.append(proto.first_event - proto.started)
            if proto.first_text is not None:
                ttft_text.append(proto.first_text - proto.started)
            totals.append(ended - proto.started)
            events[proto.events] += 1

    t0 = time.perf_counter()
    spread = args.ramp / max(1, args.n)
    await asyncio.gather(*(one(i * spread) for i in range(args.n)))
    return {"streams": args.n, "completed": len(totals), "errors": dict(errors), "peak_in_flight": peak,
            "ttft_ms": dist_ms(ttfe), "first_text_ms": dist_ms(ttft_text), "total_ms": dist_ms(totals),
            "events_per_stream": {str(k): v for k, v in events.items()}, "wall_s": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--header", action="append", help="extra header 'Name: value'")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--ramp", type=float, default=0.0, help="spread the starts over this many seconds")
    parser.add_argument("--timeout", type=float, default=60, help="hard bound for the whole run, seconds")
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args))
    sys.stdout.write("BENCH_JSON " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
