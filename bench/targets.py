"""What the load is sent to: the upstream alone, the bare pass-through, the gateway, the peers.

Each target answers three kinds of chat completion, backed by the nginx upstream's locations:
instant (JSON at once), slow (JSON after 50 ms) and paced (an SSE stream of 20 chunks 20 ms apart).
`url(kind)`, `model(kind)` and `headers(kind)` say how to ask a target for each kind.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

from common import BENCH, LOOPBACK, VENV_BIN, Proc, descendants, free_port, venv_python, wait_port
from upstream import Nginx

MODELS = {"instant": "gpt-4o-mini", "slow": "gpt-4o-mini-slow", "paced": "gpt-4o-mini-stream"}
PRICE = {"input_per_1m": 0.15, "output_per_1m": 0.60}  # gpt-4o-mini's list price
EXACT_MAX_ENTRIES = 10000  # the gateway's default: the cacheable-miss rows fill it, then evict


def body_for(model: str, cacheable: bool, vary: bool = False) -> dict:
    """The one question every JSON scenario asks; `vary` puts `@N@` in it for the load generator to number."""
    content = "How long does a refund take?" + (" Ticket @N@." if vary else "")
    body = {"model": model, "max_tokens": 128, "messages": [
        {"role": "system", "content": "You are the support assistant of an online shop. Answer briefly."},
        {"role": "user", "content": content}]}
    if cacheable:
        body["temperature"] = 0
    return body


def mode_body(model: str, mode: str) -> dict:
    return body_for(model, mode != "bypass", vary=mode == "miss")


class Target:
    name = ""
    label = ""
    proc: Proc | None = None
    version: str | None = None

    def url(self, kind: str) -> str:
        raise NotImplementedError

    def model(self, kind: str) -> str:
        return MODELS[kind]

    def headers(self, kind: str) -> list[str]:
        return []

    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def rss_mb(self) -> float | None:
        return self.proc.rss_mb() if self.proc else None

    def thread_cpu_s(self, *names: str) -> float:
        """CPU seconds (user + system) so far of the threads, in this process and its children, whose
        name starts with one of `names` (the gateway names its embedder thread and Qdrant helper)."""
        total, tick = 0.0, os.sysconf("SC_CLK_TCK")
        for pid in [self.pid(), *descendants(self.pid())]:
            try:
                tasks = list(Path(f"/proc/{pid}/task").iterdir())
            except OSError:
                continue
            for task in tasks:
                try:
                    if (task / "comm").read_text().startswith(names):
                        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
                except (OSError, IndexError, ValueError):
                    continue  # the thread ended meanwhile
        return total

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


class UpstreamAlone(Target):
    name, label = "upstream", "upstream alone (nginx)"

    def __init__(self, nginx: Nginx):
        self.nginx = nginx
        self.proc = nginx.proc

    def url(self, kind: str) -> str:
        return self.nginx.url(kind) + "/chat/completions"

    def stop(self) -> None:  # nginx outlives the targets
        pass


class Bare(Target):
    name, label = "bare", "bare Starlette+aiohttp"

    def __init__(self, nginx: Nginx, workdir: Path, workers: int = 1):
        self.port = free_port()
        self.proc = Proc("bare", [venv_python(), str(BENCH / "bare.py"), "--upstream",
                                  f"http://{LOOPBACK}:{nginx.port}", "--port", str(self.port),
                                  "--workers", str(workers)], workdir / "bare.log").start()
        wait_port(self.port, 30, self.proc.popen)

    def url(self, kind: str) -> str:
        return f"http://{LOOPBACK}:{self.port}/{kind}/v1/chat/completions"


def gateway_config(nginx: Nginx, echo_url: str | None, port: int, semantic: bool = True,
                   semantic_timeout_ms: float | None = None) -> dict:
    """The gateway's config: one provider per nginx location, the cache as the issue specifies."""
    def provider(base_url: str) -> dict:
        # Sized like the bare pass-through's pool, so neither queues what the other would not.
        return {"base_url": base_url, "api_key": "sk-bench", "max_concurrency": 1024, "max_queue": 4096,
                "queue_timeout_s": 30, "timeout_s": 60, "connect_timeout_s": 10}
    providers = {kind: provider(nginx.url(kind)) for kind in MODELS}
    models = {name: {"provider": kind, "name": "gpt-4o-mini", **PRICE} for kind, name in MODELS.items()}
    routes: dict = {}
    if echo_url:
        providers["echo"] = provider(echo_url)
        models["gpt-4o-mini-echo"] = {"provider": "echo", "name": "gpt-4o-mini", **PRICE}
        routes["faq"] = {"targets": ["gpt-4o-mini-echo"], "cache": {"semantic": True}}
    cfg = {
        "server": {"host": LOOPBACK, "port": port},
        "providers": providers,
        "models": models,
        "routes": routes,
        "cache": {
            "exact": {"backend": "memory", "max_entries": EXACT_MAX_ENTRIES, "eviction": "lru", "ttl_s": 3600},
            "semantic": {"enabled": semantic, "qdrant": {"location": ":memory:"},
                         "embedder": {"kind": "local", "model": "all-MiniLM-L6-v2"}},
            "cacheable": "deterministic",
        },
    }
    if semantic_timeout_ms:
        cfg["cache"]["semantic"]["timeout_ms"] = semantic_timeout_ms
    return cfg


class Gateway(Target):
    name = "gateway"

    def __init__(self, workdir: Path, config: dict, workers: int = 1, tag: str = "gateway",
                 start_timeout: float = 180, wait: bool = True, env: dict[str, str] | None = None,
                 request_log: bool = False):
        self.port = config["server"]["port"]
        self.workers = workers
        self.name = tag
        self.label = "gateway" if workers == 1 else f"gateway --workers {workers}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{tag}.yaml"
        self.config_path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        argv = [str(VENV_BIN / "gateway"), "serve", "--config", str(self.config_path),
                "--port", str(self.port), "--workers", str(workers), "--log-level", "warning"]
        # The request log (one JSON line per request, written by a background thread) goes to
        # /dev/null: a 1M-request run would otherwise leave a 600 MB file. Errors stay in the log.
        # request_log: keep it (the soak's config logs only errors).
        self.proc = Proc(tag, argv, workdir / f"{tag}.log", env=env).start(stdout_to_null=not request_log)
        self.started = time.monotonic()
        self.start_timeout = start_timeout
        self.startup_s: float | None = None
        if wait:
            self.wait()

    def wait(self) -> "Gateway":
        """Block until /readyz answers 200 (the semantic layer's embedder loads before that)."""
        if self.startup_s is not None:
            return self
        try:
            wait_port(self.port, self.start_timeout, self.proc.popen)
            self._wait_ready(self.start_timeout - (time.monotonic() - self.started))
        except RuntimeError as exc:
            tail = self.proc.tail(12)
            self.stop()
            raise RuntimeError(f"gateway did not start: {exc}\n{tail}") from None
        self.startup_s = time.monotonic() - self.started
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + max(1.0, timeout)
        last = ""
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise RuntimeError("the gateway exited")
            try:
                with urllib.request.urlopen(f"http://{LOOPBACK}:{self.port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise RuntimeError(f"/readyz never answered 200 ({last})")

    def url(self, kind: str) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1/chat/completions"

    def metrics(self) -> str:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.port}/metrics", timeout=5) as r:
                return r.read().decode()
        except OSError:
            return ""


class PeerTarget(Target):
    """A peer from peers.py, seen as a target."""

    def __init__(self, peer, label: str, kind_headers=None):
        self.peer = peer
        self.name = peer.name
        self.label = label
        self.proc = peer.proc
        self.version = peer.version
        self.kind_headers = kind_headers

    def url(self, kind: str) -> str:
        return self.peer.url

    def headers(self, kind: str) -> list[str]:
        return self.kind_headers(kind) if self.kind_headers else list(self.peer.headers)

    def stop(self) -> None:
        self.peer.stop()


class RouteView(Target):
    """A running gateway asked for its routes by name rather than for the bench's models (the
    guardrails scenario: one gateway, a route with rules and one without). It does not own the
    gateway: stopping the view leaves it running."""

    def __init__(self, gateway: Gateway, routes: dict[str, str], label: str):
        self.gateway = gateway
        self.routes = routes  # kind -> route name
        self.name = gateway.name
        self.label = label
        self.proc = gateway.proc

    def url(self, kind: str) -> str:
        return self.gateway.url(kind)

    def model(self, kind: str) -> str:
        return self.routes[kind]

    def stop(self) -> None:
        pass
