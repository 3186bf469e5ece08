"""The soak's traffic: a steady mix of requests, each one written down as the client saw it.

  soakload.py --url URL --model M --start EPOCH --end EPOCH --out requests.csv [--in-flight 12]

`--in-flight` clients, each sending one request at a time, at most one per `--cycle-ms`, picked at random:
JSON (not cacheable), streams (not cacheable), repeated questions (`temperature: 0`, a pool of 16,
half of them streamed: exact-cache hits once stored) and cancels (a stream the client leaves after
one to three chunks). In the `--disconnect` windows, half of all requests are also dropped by the
client at a random moment of their first 300 ms. Every request is one CSV row (`FIELDS`): when it
ended, what it was, the status, the outcome in the client's words, its latency and cache layer.
Loopback only; the load stops starting requests at `--end` and waits for those in flight (each is
bounded by `--timeout`). Prints one `BENCH_JSON {...}` line with the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import random
import time
from collections import Counter

import aiohttp

from client import loopback_only

FIELDS = ["t_end", "kind", "stream", "status", "outcome", "latency_ms", "ttft_ms", "cache", "question"]
KINDS = (("json", 0.35), ("stream", 0.25), ("repeat", 0.25), ("cancel", 0.15))
REPEATED = [f"Which payment methods does the shop accept for orders of type {i}?" for i in range(16)]
DONE = b"data: [DONE]"


class Left(Exception):
    """The client left on purpose (a cancel, or a disconnect of the disconnect phase)."""

    def __init__(self, outcome: str):
        super().__init__(outcome)
        self.outcome = outcome


def error_kind(status: int, raw: bytes) -> str:
    """`http 503 targets_unavailable`: the status and the error's code (or type) as the client reads
    them; `(upstream's)` when the body is the upstream's own error passed through."""
    try:
        err = json.loads(raw).get("error") or {}
    except (ValueError, AttributeError):
        return f"http {status} (body not JSON)"
    if not isinstance(err, dict):
        return f"http {status} (no error object)"
    kind = f"http {status} {err.get('code') or err.get('type') or '?'}"
    return kind + (" (upstream's)" if str(err.get("message", "")).startswith("fake upstream error") else "")


def stream_error(body: bytes) -> str | None:
    """The code of an SSE error event in a stream, if it has one."""
    at = body.find(b'data: {"error"')
    if at < 0:
        return None
    line = body[at + 6:].split(b"\n", 1)[0]
    try:
        err = json.loads(line)["error"]
        return str(err.get("code") or err.get("type") or "?")
    except (ValueError, KeyError, AttributeError, TypeError):
        return "?"


class Load:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rand = random.Random(args.seed)
        self.ids = itertools.count(1)
        self.windows = [tuple(w) for w in json.loads(args.disconnect or "[]")]
        self.out = open(args.out, "w", newline="")
        self.rows = csv.writer(self.out)
        self.rows.writerow(FIELDS)
        self.counts: Counter = Counter()

    def in_disconnect_window(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.windows)

    def body(self, kind: str) -> tuple[dict, bool, int | None]:
        n, q = next(self.ids), None
        if kind == "repeat":
            q = self.rand.randrange(len(REPEATED))
            question, stream = REPEATED[q], self.rand.random() < 0.5
        else:
            question, stream = f"Soak question {n}: how long does a refund for order {n * 7919 % 100000} take?", kind != "json"
        body = {"model": self.args.model, "max_tokens": 64, "stream": stream,
                "messages": [{"role": "system", "content": "You are the support assistant of an online shop."},
                             {"role": "user", "content": question}]}
        if kind == "repeat":
            body["temperature"] = 0
        return body, stream, q

    async def one(self, sess: aiohttp.ClientSession, kind: str) -> None:
        body, stream, question = self.body(kind)
        started = time.time()
        drop_at = None
        if self.in_disconnect_window(started) and self.rand.random() < 0.5:
            drop_at = self.rand.uniform(0.0, 0.3)
        leave_after = self.rand.randint(1, 3) if kind == "cancel" else None
        ttft = None
        status, cache = 0, ""
        try:
            call = self.ask(sess, body, stream, leave_after)
            if drop_at is not None:
                try:
                    status, cache, outcome, ttft = await asyncio.wait_for(call, drop_at)
                except asyncio.TimeoutError:
                    raise Left("disconnected") from None
            else:
                status, cache, outcome, ttft = await call
        except Left as left:
            outcome = left.outcome
        except asyncio.TimeoutError:
            outcome = "client timeout"
        except aiohttp.ClientError as exc:
            outcome = f"client error {type(exc).__name__}"
        ended = time.time()
        self.counts[outcome] += 1
        self.rows.writerow([f"{ended:.3f}", kind, int(stream), status, outcome, f"{(ended - started) * 1000:.1f}",
                            "" if ttft is None else f"{(ttft - started) * 1000:.1f}", cache,
                            "" if question is None else question])

    async def ask(self, sess, body: dict, stream: bool, leave_after: int | None):
        """(status, cache layer, outcome, time of the first event or None)."""
        timeout = aiohttp.ClientTimeout(total=self.args.timeout)
        async with sess.post(self.args.url, json=body, timeout=timeout) as resp:
            cache = resp.headers.get("x-gateway-cache", "")
            if resp.status != 200:
                kind = error_kind(resp.status, await resp.read())
                if resp.status in (429, 503):
                    kind += ", with Retry-After" if "retry-after" in resp.headers else ", no Retry-After"
                return resp.status, cache, kind, None
            if not stream:
                raw = await resp.read()
                try:
                    ok = bool(json.loads(raw)["choices"][0]["message"]["content"])
                except (ValueError, KeyError, IndexError, TypeError):
                    ok = False
                return 200, cache, "ok" if ok else "200 with a body that is not a completion", None
            seen, first, events = b"", None, 0
            async for chunk in resp.content.iter_any():
                if first is None:
                    first = time.time()
                seen += chunk
                events += chunk.count(b"data: ")
                if leave_after is not None and events > leave_after and DONE not in seen:
                    resp.close()  # the client leaves mid-stream
                    raise Left("cancelled")
            code = stream_error(seen)
            if code is not None:
                return 200, cache, f"stream error event {code}", first
            if not seen.rstrip().endswith(DONE):
                return 200, cache, "stream ended without [DONE] or an error event", first
            return 200, cache, "ok", first

    async def client(self, sess: aiohttp.ClientSession) -> None:
        weights = [w for _, w in KINDS]
        names = [k for k, _ in KINDS]
        while (started := time.time()) < self.args.end:
            await self.one(sess, self.rand.choices(names, weights)[0])
            # A fast answer (a cache hit, or a 503 while the circuit is open) does not speed the client up.
            await asyncio.sleep(max(0.0, started + self.args.cycle_ms / 1000 - time.time()))

    async def run(self) -> dict:
        await asyncio.sleep(max(0.0, self.args.start - time.time()))
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as sess:
            await asyncio.gather(*(self.client(sess) for _ in range(self.args.in_flight)))
        self.out.close()
        return {"requests": sum(self.counts.values()), "outcomes": dict(self.counts)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--start", type=float, required=True, help="epoch seconds: the first request")
    p.add_argument("--end", type=float, required=True, help="epoch seconds: no request starts after this")
    p.add_argument("--out", required=True, help="CSV file, one row per request")
    p.add_argument("--in-flight", type=int, default=12)
    p.add_argument("--cycle-ms", type=float, default=50, help="each client starts a request at most this often")
    p.add_argument("--timeout", type=float, default=30, help="seconds a request may take before the client gives up")
    p.add_argument("--disconnect", default="[]", help="JSON [[start, end], ...] epoch windows of random disconnects")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    loopback_only(args.url)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    print("BENCH_JSON " + json.dumps(asyncio.run(Load(args).run())), flush=True)


if __name__ == "__main__":
    main()
