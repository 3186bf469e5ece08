"""The nginx fake upstream: fixed chat-completion JSON and SSE, a 50 ms variant, paced streams.

Rendered from nginx/upstream.conf.in into a temp dir and run in the foreground on a free loopback
port (no root paths, no system nginx service). `python bench/upstream.py` runs it alone.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

from common import BENCH, LOOPBACK, Proc, free_port, need, wait_port

ANSWER = ("To request a refund, open Orders, pick the order and choose Request refund. "
          "Refunds reach your card within 5 to 7 business days.")
USAGE = {"prompt_tokens": 42, "completion_tokens": 28, "total_tokens": 70}
CHAT = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
    "system_fingerprint": "fp_bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER, "refusal": None},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": USAGE,
}
# The same answer as Anthropic's Messages API gives it (the `providers` scenario: what translating costs).
MESSAGE = {
    "id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-bench",
    "content": [{"type": "text", "text": ANSWER}], "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 42, "output_tokens": 28, "cache_creation_input_tokens": 0,
              "cache_read_input_tokens": 0},
}
CHUNKS = 20          # content events per stream
CHUNK_DELAY_S = 0.02
SLOW_S = 0.05


def _dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


def sse_events(chunks: int = CHUNKS) -> list[str]:
    """The stream, one string per SSE event (without the blank line): role, content x N, stop, [DONE]."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "gpt-4o-mini", "system_fingerprint": "fp_bench"}

    def event(delta, finish=None):
        return "data: " + _dumps({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                       "finish_reason": finish}]})
    words = (ANSWER.split() * 4)[:chunks]
    out = [event({"role": "assistant", "content": ""})]
    out += [event({"content": (" " if i else "") + w}) for i, w in enumerate(words)]
    out += [event({}, "stop"), "data: [DONE]"]
    return out


def anthropic_events(chunks: int = CHUNKS) -> list[tuple[str, str]]:
    """The same stream in Anthropic's events: (event name, data) each."""
    def event(name, data):
        return name, _dumps({"type": name, **data})
    words = (ANSWER.split() * 4)[:chunks]
    start = {**MESSAGE, "content": [], "stop_reason": None, "usage": {**MESSAGE["usage"], "output_tokens": 1}}
    out = [event("message_start", {"message": start}), event("ping", {}),
           event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})]
    out += [event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": (" " if i else "") + w}})
            for i, w in enumerate(words)]
    out += [event("content_block_stop", {"index": 0}),
            event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                    "usage": {"output_tokens": 28}}),
            event("message_stop", {})]
    return out


def _nginx_str(s: str) -> str:
    assert "'" not in s and "\\" not in s
    return s


def render(directory: Path, port: int, chunks: int = CHUNKS, chunk_delay_s: float = CHUNK_DELAY_S,
           slow_s: float = SLOW_S) -> str:
    events = sse_events(chunks)
    # nginx turns \n inside a quoted string into a newline; `echo` adds one more: "data: ...\n\n".
    paced = [f"            echo '{_nginx_str(events[0])}\\n';", "            echo_flush;"]
    for ev in events[1:1 + chunks]:
        paced += [f"            echo_sleep {chunk_delay_s:g};", f"            echo '{_nginx_str(ev)}\\n';",
                  "            echo_flush;"]
    paced += [f"            echo '{_nginx_str(ev)}\\n';" for ev in events[1 + chunks:]]
    text = (BENCH / "nginx" / "upstream.conf.in").read_text()
    values = {
        # As root, nginx workers would drop to `nobody`, who cannot use our 0700 temp dir.
        "USER": "user root;" if os.geteuid() == 0 else "",
        "DIR": str(directory), "PORT": str(port), "CHAT_JSON": _nginx_str(_dumps(CHAT)),
        "SSE": "\n".join(l for l in paced if "echo_sleep" not in l and "echo_flush" not in l),
        "MESSAGE_JSON": _nginx_str(_dumps(MESSAGE)),
        "ANTHROPIC_SSE": "\n".join(f"            echo 'event: {name}\\ndata: {_nginx_str(data)}\\n';"
                                   for name, data in anthropic_events(chunks)),
        "PACED": "\n".join(paced),
        "CHUNKS": str(chunks), "CHUNK_DELAY_S": f"{chunk_delay_s:g}", "SLOW_S": f"{slow_s:g}",
    }
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    assert not re.search(r"@[A-Z_]+@", text.split("\n", 2)[2]), "unfilled placeholder"
    return text


class Nginx:
    def __init__(self, workdir: Path | None = None, port: int | None = None):
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="bench-nginx-"))
        self.port = port or free_port()
        self.proc: Proc | None = None

    def url(self, kind: str = "instant") -> str:
        """Base URL for a provider: kind is instant, slow, sse or paced."""
        return f"http://{LOOPBACK}:{self.port}/{kind}/v1"

    def start(self) -> "Nginx":
        nginx = need("nginx")
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(render(self.dir, self.port))
        self.proc = Proc("nginx", [nginx, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")],
                         self.dir / "stdout.log").start()
        try:
            wait_port(self.port, 10, self.proc.popen)
        except RuntimeError as exc:
            raise RuntimeError(f"nginx did not start: {exc}\n{(self.dir / 'error.log').read_text(errors='replace')[-800:]}")
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


if __name__ == "__main__":
    up = Nginx().start()
    print(f"nginx fake upstream: {up.url('instant')} {up.url('slow')} {up.url('sse')} {up.url('paced')}", flush=True)
    try:
        while up.proc.alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        up.stop()
