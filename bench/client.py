"""The async load client (aiohttp) for what wrk cannot measure: streams, cache layers, correctness.

  streams  N concurrent SSE streams: time to first byte, events per stream, all complete?
  fill     store questions through the gateway (misses that the cache keeps)
  lookup   semantic lookups: paraphrases of stored questions, one at a time
  mix      a day of support traffic in miniature: Zipf over questions; repeats, paraphrases, new ones

Every mode is bounded in count and time, talks to 127.0.0.1 only, and prints one `BENCH_JSON {...}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import aiohttp

import questions as Q
from stats import dist_ms

DONE = b"data: [DONE]"


def loopback_only(url: str) -> str:
    host = urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing non-loopback target {url}")
    return url


def session(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit),
                                 timeout=aiohttp.ClientTimeout(total=None, sock_connect=30))


def headers(args) -> dict[str, str]:
    out = {"content-type": "application/json"}
    for h in args.header or []:
        name, _, value = h.partition(":")
        out[name.strip()] = value.strip()
    return out


# ---- streams ----------------------------------------------------------------------------------

async def streams(args) -> dict:
    body = json.dumps({"model": args.model, "stream": True,
                       "messages": [{"role": "user", "content": "Tell me about refunds."}]}).encode()
    hdrs = headers(args)
    ttfb: list[float] = []
    totals: list[float] = []
    events: Counter = Counter()
    errors: Counter = Counter()
    in_flight = peak = 0
    deadline = time.monotonic() + args.timeout

    async def one(sess: aiohttp.ClientSession, delay: float) -> None:
        nonlocal in_flight, peak
        await asyncio.sleep(delay)
        in_flight += 1
        peak = max(peak, in_flight)
        started = time.perf_counter()
        first = None
        count = 0
        tail = b""
        try:
            async with sess.post(args.url, data=body, headers=hdrs,
                                 timeout=aiohttp.ClientTimeout(total=max(1.0, deadline - time.monotonic()))) as resp:
                if resp.status != 200:
                    errors[f"status {resp.status}"] += 1
                    await resp.read()
                    return
                async for chunk in resp.content.iter_any():
                    if first is None:
                        first = time.perf_counter()
                    count += chunk.count(b"data: ")
                    tail = (tail + chunk)[-64:]
            if DONE not in tail or b'"error"' in tail:
                errors["incomplete"] += 1
                return
            ttfb.append(first - started)
            totals.append(time.perf_counter() - started)
            events[count] += 1
        except asyncio.TimeoutError:
            errors["timeout"] += 1
        except aiohttp.ClientError as exc:
            errors[type(exc).__name__] += 1
        finally:
            in_flight -= 1

    async with session(0) as sess:
        t0 = time.perf_counter()
        spread = args.ramp / max(1, args.n)
        await asyncio.gather(*(one(sess, i * spread) for i in range(args.n)))
        wall = time.perf_counter() - t0
    return {"streams": args.n, "completed": len(totals), "errors": dict(errors), "peak_in_flight": peak,
            "ttfb_ms": dist_ms(ttfb), "total_ms": dist_ms(totals), "events_per_stream": dict(events),
            "wall_s": wall}


# ---- cache scenarios --------------------------------------------------------------------------

class Tally:
    def __init__(self):
        self.latency: dict[str, list[float]] = {}
        self.layers: Counter = Counter()
        self.errors: Counter = Counter()
        self.tokens: dict[str, list[int]] = {}  # layer -> [prompt, completion]
        self.wrong_semantic = 0
        self.wrong_examples: list[dict[str, str]] = []
        self.checked_semantic = 0
        self.requests = 0


async def ask(sess, url, hdrs, text: str, model: str, tally: Tally, expect=None, index=None) -> str | None:
    body = {"model": model, "temperature": 0, "messages": [
        {"role": "system", "content": "You are the support assistant of an online shop. Answer briefly."},
        {"role": "user", "content": text}]}
    started = time.perf_counter()
    tally.requests += 1
    try:
        async with sess.post(url, json=body, headers=hdrs) as resp:
            raw = await resp.read()
            elapsed = time.perf_counter() - started
            if resp.status != 200:
                tally.errors[f"status {resp.status}"] += 1
                return None
            layer = resp.headers.get("x-gateway-cache", "none")
    except asyncio.TimeoutError:
        tally.errors["timeout"] += 1
        return None
    except aiohttp.ClientError as exc:
        tally.errors[type(exc).__name__] += 1
        return None
    tally.layers[layer] += 1
    tally.latency.setdefault(layer, []).append(elapsed)
    try:
        answer = json.loads(raw)
        usage = answer.get("usage") or {}
        content = answer["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        tally.errors["bad json"] += 1
        return layer
    t = tally.tokens.setdefault(layer, [0, 0])
    t[0] += int(usage.get("prompt_tokens") or 0)
    t[1] += int(usage.get("completion_tokens") or 0)
    if layer == "hit-semantic" and expect is not None and index is not None and content.startswith("Echo: "):
        tally.checked_semantic += 1
        answered = content[len("Echo: "):]
        if index.get(answered) != expect:
            tally.wrong_semantic += 1
            if len(tally.wrong_examples) < 12:
                tally.wrong_examples.append({"asked": text, "answered": answered})
    return layer


async def run_pool(jobs, concurrency: int, deadline: float) -> bool:
    """Run coroutine factories with at most `concurrency` at once until done or the deadline."""
    queue = list(reversed(jobs))
    finished = True

    async def worker():
        nonlocal finished
        while queue:
            if time.monotonic() > deadline:
                finished = False
                return
            await queue.pop()()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return finished


def summary(tally: Tally, wall: float, finished: bool) -> dict:
    return {"requests": tally.requests, "finished": finished, "wall_s": wall, "layers": dict(tally.layers),
            "errors": dict(tally.errors), "latency_ms": {k: dist_ms(v) for k, v in tally.latency.items()},
            "tokens": tally.tokens, "semantic_checked": tally.checked_semantic,
            "semantic_wrong": tally.wrong_semantic, "semantic_wrong_examples": tally.wrong_examples}


async def fill(args) -> dict:
    """Ask the first N canonical questions once each, so the cache stores them."""
    tally = Tally()
    qs = Q.all_questions()[: args.n]
    hdrs = headers(args)
    async with session(args.concurrency) as sess:
        t0 = time.perf_counter()
        jobs = [lambda q=q: ask(sess, args.url, hdrs, Q.text(*q), args.model, tally) for q in qs]
        finished = await run_pool(jobs, args.concurrency, time.monotonic() + args.timeout)
        return summary(tally, time.perf_counter() - t0, finished)


async def lookup(args) -> dict:
    """Paraphrases of stored questions, one request at a time, for `duration` seconds."""
    tally = Tally()
    qs = Q.all_questions()[: args.stored]
    rng = random.Random(args.seed)
    idx = Q.index()
    hdrs = headers(args)
    async with session(args.concurrency) as sess:
        t0 = time.perf_counter()
        end = time.monotonic() + args.duration

        # Every lookup is a text never asked before (else the exact layer would answer it).
        asks = [(q, w) for q in qs for w in range(1, Q.WORDINGS)]
        rng.shuffle(asks)
        asks = iter(asks[: args.max_requests])

        async def worker():
            for q, w in asks:
                if time.monotonic() > end:
                    return
                layer = await ask(sess, args.url, hdrs, Q.text(q[0], q[1], w), args.model, tally, q, idx)
                if args.ready_file and not ready:
                    ready.append(Path(args.ready_file).touch())
                by_wording[f"{'rephrased' if w <= 3 else 'retyped'}/{layer}"] += 1

        by_wording: Counter = Counter()
        ready: list = []  # non-empty once the first answer came back (then --ready-file exists)
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        out = summary(tally, time.perf_counter() - t0, True)
        out["by_wording"] = dict(by_wording)
        return out


async def mix(args) -> dict:
    """Zipf over a pool of questions; each ask is the canonical text, a paraphrase, or a new question."""
    rng = random.Random(args.seed)
    qs = Q.all_questions()[:Q.BASE][::-1]  # from the far end of the base: `fill` stores from the front
    pool, fresh = qs[: args.pool], iter(qs[args.pool:])
    idx = Q.index()
    plan = []
    for rank in Q.zipf_ranks(len(pool), args.zipf_s, rng, args.n):
        r = rng.random()
        if r < args.new:
            q, wording, kind = next(fresh), 0, "new"
        elif r < args.new + args.paraphrase:
            q, wording, kind = pool[rank], rng.randint(1, Q.WORDINGS - 1), "paraphrase"
        else:
            q, wording, kind = pool[rank], 0, "repeat"
        plan.append((q, wording, kind))
    tally = Tally()
    kinds: Counter = Counter()
    kind_layers: Counter = Counter()
    hdrs = headers(args)
    async with session(args.concurrency) as sess:
        t0 = time.perf_counter()

        async def job(q, wording, kind):
            layer = await ask(sess, args.url, hdrs, Q.text(q[0], q[1], wording), args.model, tally, q, idx)
            kinds[kind] += 1
            kind_layers[f"{kind}/{layer}"] += 1

        jobs = [lambda p=p: job(*p) for p in plan]
        finished = await run_pool(jobs, args.concurrency, time.monotonic() + args.timeout)
        out = summary(tally, time.perf_counter() - t0, finished)
    out["kinds"] = dict(kinds)
    out["kind_layers"] = dict(kind_layers)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", required=True, help="full URL of /v1/chat/completions")
    common.add_argument("--model", default="gpt-4o-mini")
    common.add_argument("--header", action="append", help="extra header 'Name: value'")
    common.add_argument("--timeout", type=float, default=120, help="hard bound for the whole run, seconds")
    common.add_argument("--concurrency", type=int, default=8)
    s = sub.add_parser("streams", parents=[common])
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--ramp", type=float, default=0.0, help="spread the stream starts over this many seconds")
    f = sub.add_parser("fill", parents=[common])
    f.add_argument("--n", type=int, default=10000)
    lk = sub.add_parser("lookup", parents=[common])
    lk.add_argument("--stored", type=int, default=10000)
    lk.add_argument("--duration", type=float, default=10)
    lk.add_argument("--max-requests", type=int, default=100000)
    lk.add_argument("--seed", type=int, default=11, help="another seed asks other paraphrases")
    lk.add_argument("--ready-file", help="touched once the first lookup is answered (the client's start-up "
                                         "costs a CPU-second that must not overlap a measurement beside it)")
    m = sub.add_parser("mix", parents=[common])
    m.add_argument("--n", type=int, default=2000, help="requests")
    m.add_argument("--pool", type=int, default=1000, help="distinct questions the Zipf draws from")
    m.add_argument("--zipf-s", type=float, default=1.1)
    m.add_argument("--paraphrase", type=float, default=0.3)
    m.add_argument("--new", type=float, default=0.15)
    m.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    loopback_only(args.url)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    mode = {"streams": streams, "fill": fill, "lookup": lookup, "mix": mix}[args.mode]
    result = asyncio.run(asyncio.wait_for(mode(args), args.timeout + 30))
    sys.stdout.write("BENCH_JSON " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
