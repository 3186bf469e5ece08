"""Peers measured side by side: the LiteLLM proxy (PyPI, its own venv) and the Portkey gateway (npm).

`python bench/peers.py install` puts them in bench/.peers/ (git-ignored), outside the project's
dependencies. The bench starts whichever is installed; a peer that is missing or fails to start
leaves its column empty with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import BENCH, LOOPBACK, Proc, free_port, wait_port

PEERS = BENCH / ".peers"
# Pinned (1.110.x needs a `litellm-proxy` package that PyPI does not have). Never 1.107.0 (a known-compromised release), nor 1.82.7 / 1.82.8 (likewise).
LITELLM_VERSION = os.environ.get("LITELLM_VERSION", "1.106.12")
PORTKEY_VERSION = os.environ.get("PORTKEY_VERSION", "1.15.2")
COMPROMISED = {"1.107.0", "1.82.7", "1.82.8"}

LITELLM_VENV = PEERS / "litellm"
PORTKEY_DIR = PEERS / "portkey"


def litellm_bin() -> Path:
    return LITELLM_VENV / "bin" / "litellm"


def portkey_entry() -> Path:
    return PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


def install_litellm() -> str:
    if LITELLM_VERSION in COMPROMISED:
        raise SystemExit(f"refusing litellm {LITELLM_VERSION}: a known-compromised release")
    if litellm_bin().exists() and installed_litellm() == LITELLM_VERSION:
        return f"litellm {LITELLM_VERSION} already in {LITELLM_VENV}"
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(LITELLM_VENV)], check=True)
    pip = str(LITELLM_VENV / "bin" / "pip")
    subprocess.run([pip, "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([pip, "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
    return f"litellm {installed_litellm()} installed in {LITELLM_VENV}"


def installed_litellm() -> str | None:
    py = LITELLM_VENV / "bin" / "python"
    if not py.exists():
        return None
    out = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                         capture_output=True, text=True)
    return out.stdout.strip() or None


def install_portkey() -> str:
    if not shutil.which("npm"):
        raise SystemExit("npm is missing: install Node.js 20 (Debian: nodejs npm)")
    PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
    # Known: on Node, Portkey 1.15.2 answers every *streamed* request with a 500 ("TypeError:
    # immutable" in updateHeaders, Portkey-AI/gateway issues 1389 and 1550; pinning
    # @hono/node-server to 1.14.2 does not help). JSON answers work. The report says so.
    (PORTKEY_DIR / "package.json").write_text('{"name": "bench-portkey", "private": true}\n')
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
                    f"@portkey-ai/gateway@{PORTKEY_VERSION}"], cwd=PORTKEY_DIR, check=True)
    return f"@portkey-ai/gateway {installed_portkey()} installed in {PORTKEY_DIR}"


def installed_portkey() -> str | None:
    pkg = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "package.json"
    try:
        return json.loads(pkg.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


# ---- running them -----------------------------------------------------------------------------

class Peer:
    """A running peer: `url` is its /v1/chat/completions, `headers` what every request carries."""

    name = ""
    url = ""
    headers: list[str] = []
    proc: Proc | None = None
    version: str | None = None

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def pid(self) -> int:
        return self.proc.pid


class LiteLLM(Peer):
    name = "litellm"

    def __init__(self, workdir: Path, models: dict[str, str], cache: bool):
        """models: model name a client sends -> the upstream's OpenAI base URL."""
        self.version = installed_litellm()
        if not self.version:
            raise RuntimeError("not installed (run `make bench-peers`)")
        port = free_port()
        self.key = "sk-bench-" + os.urandom(16).hex()
        cfg = {"model_list": [{"model_name": name, "litellm_params": {
                   "model": "openai/gpt-4o-mini", "api_base": base, "api_key": "sk-bench"}}
                  for name, base in models.items()],
               "litellm_settings": {"drop_params": True, "set_verbose": False, "telemetry": False,
                                    "request_timeout": 30},
               # A master key, as any real deployment has (it refuses to start without one).
               "general_settings": {"master_key": self.key}}
        if cache:  # its in-memory response cache, the closest to our exact cache
            cfg["litellm_settings"].update({"cache": True, "cache_params": {"type": "local"}})
        path = workdir / "litellm.yaml"
        path.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
        env = {"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "DISABLE_SCHEMA_UPDATE": "true",
               "NO_DOCS": "True", "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        self.proc = Proc("litellm", [str(litellm_bin()), "--config", str(path), "--host", LOOPBACK,
                                     "--port", str(port), "--num_workers", "1"],
                         workdir / "litellm.log", env=env, cwd=workdir).start()
        try:
            wait_port(port, 180, self.proc.popen)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"did not start: {exc}: {self.proc.tail(5)}") from None
        self.url = f"http://{LOOPBACK}:{port}/v1/chat/completions"
        self.headers = [f"Authorization: Bearer {self.key}"]


class Portkey(Peer):
    name = "portkey"

    def __init__(self, workdir: Path, upstream_base: str, cache: bool):
        self.version = installed_portkey()
        if not self.version:
            raise RuntimeError("not installed (run `make bench-peers`)")
        port = free_port()
        self.proc = Proc("portkey", ["node", str(portkey_entry()), f"--port={port}"],
                         workdir / "portkey.log", cwd=workdir).start()
        try:
            wait_port(port, 60, self.proc.popen)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"did not start: {exc}: {self.proc.tail(5)}") from None
        self.url = f"http://{LOOPBACK}:{port}/v1/chat/completions"
        self.headers = ["x-portkey-provider: openai", f"x-portkey-custom-host: {upstream_base}",
                        "Authorization: Bearer sk-bench"]
        if cache:
            self.headers.append('x-portkey-config: {"cache": {"mode": "simple"}}')


def main() -> None:
    what = sys.argv[1:] or ["install"]
    if what[0] != "install":
        raise SystemExit("usage: python bench/peers.py install [litellm|portkey]")
    names = what[1:] or ["litellm", "portkey"]
    failed = False
    for name in names:
        t0 = time.monotonic()
        try:
            msg = install_litellm() if name == "litellm" else install_portkey()
            print(f"{msg} ({time.monotonic() - t0:.0f}s)")
        except (subprocess.CalledProcessError, SystemExit, OSError) as exc:
            failed = True
            print(f"{name}: could not install: {exc}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
