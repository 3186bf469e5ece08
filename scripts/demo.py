"""`make demo`: the bundled fake OpenAI upstream and the gateway in front of it, as one command.

Both servers are children of this process, each in its own process group, so that a signal reaches
them only through here: Ctrl-C, SIGTERM (`kill <pid>`, also of the `make` that runs this) and SIGHUP
stop both, and when either one exits on its own the other is stopped too. A second signal while
they are stopping, or a server that takes longer than GRACE_S to stop, gets SIGKILL. Should this
process itself be killed outright (kill -9), Linux sends both SIGTERM (PR_SET_PDEATHSIG).

    python scripts/demo.py [--port 8080] [--upstream-port 9999]

The ports default to $GATEWAY_PORT and $DEMO_UPSTREAM_PORT, else 8080 and 9999.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
GRACE_S = 10.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def log(message: str) -> None:
    print(f"demo: {message}", flush=True)


def _die_with_parent() -> Callable[[], None] | None:
    """Linux: a child gets SIGTERM should this process die without stopping it (kill -9), since
    its own process group keeps the terminal's Ctrl-C from reaching it."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, process_group=0,
                            preexec_fn=_die_with_parent())


def listening(port: int, proc: subprocess.Popen[bytes], stopping: list[int], timeout_s: float = 60) -> bool:
    """Whether `proc` came to listen on the port (False if it exited, a signal came, or time ran out)."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and not stopping and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def stop(servers: dict[str, subprocess.Popen[bytes]], stopping: list[int]) -> None:
    """SIGTERM to each server still running; SIGKILL (to its process group) after GRACE_S or when
    another signal comes meanwhile."""
    signals_before = len(stopping)
    for proc in servers.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + GRACE_S
    while any(proc.poll() is None for proc in servers.values()):
        if time.monotonic() > deadline or len(stopping) > signals_before:
            for name, proc in servers.items():
                if proc.poll() is None:
                    log(f"the {name} did not stop: killed")
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            break
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the gateway in front of the bundled fake OpenAI upstream")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GATEWAY_PORT") or 8080))
    parser.add_argument("--upstream-port", type=int, default=int(os.environ.get("DEMO_UPSTREAM_PORT") or 9999))
    parser.add_argument("--config", default=str(ROOT / "config" / "examples" / "demo.yaml"))
    args = parser.parse_args(argv)

    stopping: list[int] = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: stopping.append(signum))

    upstream_url = f"http://127.0.0.1:{args.upstream_port}/v1"
    env = {**os.environ, "DEMO_UPSTREAM_URL": upstream_url}
    servers: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str, command: list[str], port: int) -> bool:
        servers[name] = proc = spawn(command, env)
        if listening(port, proc, stopping):
            return True
        if not stopping:
            log(f"the {name} exited (code {proc.returncode})" if proc.poll() is not None
                else f"the {name} is not listening on port {port}")
        return False

    try:
        if not start("fake upstream", [sys.executable, str(ROOT / "tests" / "fake_upstream.py"),
                                        "--port", str(args.upstream_port)], args.upstream_port):
            return 0 if stopping else 1
        config = os.path.abspath(args.config)
        if not start("gateway", [sys.executable, "-m", "gateway.cli", "serve", "--config", config,
                                 "--port", str(args.port)], args.port):
            return 0 if stopping else 1
        log(f"the gateway on http://127.0.0.1:{args.port}/v1 (pid {servers['gateway'].pid}) in front of the "
            f"fake upstream on {upstream_url} (pid {servers['fake upstream'].pid}); Ctrl-C stops both")
        while not stopping:
            for name, proc in servers.items():
                if proc.poll() is not None:
                    log(f"the {name} exited (code {proc.returncode}): stopping the other")
                    return 1
            time.sleep(0.1)
        log("stopping both servers")
        return 0
    finally:
        stop(servers, stopping)


if __name__ == "__main__":
    sys.exit(main())
