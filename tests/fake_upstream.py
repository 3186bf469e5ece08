"""A fake OpenAI upstream for tests, the demo and the benchmark.

It answers /v1/chat/completions (JSON and SSE), /v1/embeddings and /v1/models like OpenAI does, and
has knobs for what real providers do on a bad day: latency, chunk pacing, error statuses with
Retry-After, broken streams, invalid JSON. It counts calls and the most requests it saw in flight.

Knobs are set on `FakeUpstream.knobs` (shared by all requests) or per request with a `fake` object
in the request body (the gateway passes unknown fields through), e.g. `extra_body={"fake": {...}}`.

Run alone: `python tests/fake_upstream.py --port 9999 [--latency 0.05]`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import math
import socket
import struct
import threading
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Knobs:
    latency_s: float = 0.0           # before the response headers
    chunk_delay_s: float = 0.0       # between stream chunks
    error_status: int = 0            # answer every request with this status
    error_times: int = -1            # ...only for the next N requests (-1: always)
    retry_after: str | None = None   # Retry-After header on errors
    invalid_json: bool = False       # 200 with a body that is not JSON
    broken_after: int = -1           # streams: drop the connection after N content chunks
    no_done: bool = False            # streams: end cleanly but without `data: [DONE]`
    finish_reason: str = "stop"
    reply: str | None = None         # fixed answer text; default echoes the last user message
    chunk_words: int = 1             # words per stream chunk
    logprob: float | None = None     # per-token logprob when the request asks for logprobs


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]  # names lower-cased


@dataclass
class FakeUpstream:
    host: str = "127.0.0.1"
    port: int = 0
    name: str = "fake"
    knobs: Knobs = field(default_factory=Knobs)

    def __post_init__(self) -> None:
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._generation = 0
        self.disconnects = 0
        self.seen: list[Seen] = []
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ---- control -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def reset(self) -> None:
        self.knobs = Knobs()
        self.calls = self.in_flight = self.max_in_flight = self.disconnects = 0
        self._generation += 1
        self.seen.clear()

    def set(self, **knobs: Any) -> None:
        self.knobs = replace(self.knobs, **knobs)

    def calls_to(self, path: str) -> int:
        return sum(1 for s in self.seen if s.path == path)

    def start(self) -> "FakeUpstream":
        if not self.port:
            self.port = free_port()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name=f"fake-{self.name}")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def _run(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        ready.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, backlog=4096).start()

    # ---- the server ----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        return app

    async def _begin(self, request: web.Request) -> tuple[dict[str, Any], Knobs]:
        raw = await request.read()
        body = orjson.loads(raw) if raw else {}
        self.calls += 1
        self.seen.append(Seen(request.path, body, {k.lower(): v for k, v in request.headers.items()}))
        knobs = self.knobs
        if isinstance(body.get("fake"), dict):
            names = {f.name for f in fields(Knobs)}
            knobs = replace(knobs, **{k: v for k, v in body["fake"].items() if k in names})
        if knobs.latency_s:
            await asyncio.sleep(knobs.latency_s)
        return body, knobs

    def _error(self, knobs: Knobs) -> web.Response | None:
        if knobs.error_status and knobs.error_times != 0:
            if knobs.error_times > 0:
                self.knobs.error_times -= 1
            headers = {"Retry-After": knobs.retry_after} if knobs.retry_after else None
            body = {"error": {"message": f"fake upstream error {knobs.error_status}", "type": "server_error"
                              if knobs.error_status >= 500 else "invalid_request_error", "param": None, "code": None}}
            return web.Response(body=orjson.dumps(body), status=knobs.error_status, headers=headers,
                                content_type="application/json")
        if knobs.invalid_json:
            return web.Response(body=b"<html>not json</html>", content_type="application/json")
        return None

    def _track(self, delta: int, generation: int) -> None:
        # Requests left over from before the last reset() (a slow one a test gave up on) are not
        # counted: they would skew the next test's in-flight figures.
        if generation != self._generation:
            return
        self.in_flight += delta
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        generation = self._generation
        self._track(+1, generation)
        try:
            body, knobs = await self._begin(request)
            error = self._error(knobs)
            if error is not None:
                return error
            text = knobs.reply if knobs.reply is not None else "Echo: " + last_user_text(body)
            if body.get("stream"):
                return await self._stream(request, body, knobs, text)
            return web.Response(body=orjson.dumps(self._completion(body, knobs, text)), content_type="application/json")
        finally:
            self._track(-1, generation)

    def _usage(self, body: dict[str, Any], text: str) -> dict[str, int]:
        prompt = sum(len(str(m.get("content") or "").split()) + 3 for m in body.get("messages", []))
        completion = len(text.split())
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _logprobs(self, body: dict[str, Any], knobs: Knobs, words: list[str]) -> dict[str, Any] | None:
        if not body.get("logprobs"):
            return None
        lp = knobs.logprob if knobs.logprob is not None else -0.01
        return {"content": [{"token": w, "logprob": lp, "bytes": list(w.encode()), "top_logprobs": []} for w in words]}

    def _completion(self, body: dict[str, Any], knobs: Knobs, text: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{self.name}-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "system_fingerprint": "fp_fake",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": self._logprobs(body, knobs, text.split()),
                "finish_reason": knobs.finish_reason,
            }],
            "usage": self._usage(body, text),
        }

    async def _stream(self, request: web.Request, body: dict[str, Any], knobs: Knobs, text: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        cid = f"chatcmpl-{self.name}-{next(self._ids)}"
        base = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model"), "system_fingerprint": "fp_fake"}

        def event(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> bytes:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}
            return b"data: " + orjson.dumps(chunk) + b"\n\n"

        words = text.split(" ")
        pieces = [" ".join(words[i:i + knobs.chunk_words]) for i in range(0, len(words), knobs.chunk_words)]
        pieces = [p if i == 0 else " " + p for i, p in enumerate(pieces)]
        try:
            await resp.write(event({"role": "assistant", "content": ""}))
            for i, piece in enumerate(pieces):
                if knobs.broken_after == i:
                    request.transport.close()
                    return resp
                if knobs.chunk_delay_s:
                    await asyncio.sleep(knobs.chunk_delay_s)
                await resp.write(event({"content": piece}, logprobs=self._logprobs(body, knobs, [piece])))
            await resp.write(event({}, knobs.finish_reason))
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {**base, "choices": [], "usage": self._usage(body, text)}
                await resp.write(b"data: " + orjson.dumps(usage) + b"\n\n")
            if not knobs.no_done:
                await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return resp

    async def embeddings(self, request: web.Request) -> web.Response:
        generation = self._generation
        self._track(+1, generation)
        try:
            body, knobs = await self._begin(request)
            error = self._error(knobs)
            if error is not None:
                return error
            inputs = body.get("input")
            inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
            data = [{"object": "embedding", "index": i, "embedding": fake_embedding(str(x))} for i, x in enumerate(inputs)]
            tokens = sum(len(str(x).split()) for x in inputs)
            out = {"object": "list", "data": data, "model": body.get("model"),
                   "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
            return web.Response(body=orjson.dumps(out), content_type="application/json")
        finally:
            self._track(-1, generation)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": self.name}]})


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def fake_embedding(text: str, dims: int = 32) -> list[float]:
    """A deterministic unit vector: equal texts embed equally, different texts almost never do."""
    seed = hashlib.sha256(text.encode()).digest() * (dims * 4 // 32 + 1)
    raw = struct.unpack(f"<{dims}i", seed[: dims * 4])
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description="fake OpenAI upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream chunks")
    args = parser.parse_args()
    upstream = FakeUpstream(args.host, args.port, knobs=Knobs(latency_s=args.latency, chunk_delay_s=args.chunk_delay))
    print(f"fake OpenAI upstream on {upstream.url}", flush=True)
    web.run_app(upstream.app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
