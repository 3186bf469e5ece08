"""Small helpers shared by the bench: ports, processes, waiting, RSS, wrk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_BIN = Path(os.environ.get("BENCH_VENV_BIN", ROOT / ".venv" / "bin"))
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {LOOPBACK}:{port} after {timeout:g}s")


def need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if not path:
        raise RuntimeError(f"`{tool}` is not installed: run `make system-test-deps` (Debian: nginx-light, "
                           "libnginx-mod-http-echo, wrk)")
    return path


@dataclass
class Proc:
    """A child process in its own process group, stopped with SIGTERM then SIGKILL."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, stdout_to_null: bool = False) -> "Proc":
        """stdout_to_null: keep only stderr (the gateway's request lines go to stdout, one per request)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")
        env = {**os.environ, **(self.env or {})}
        self.popen = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL if stdout_to_null else out,
                                      stderr=out if stdout_to_null else subprocess.STDOUT, env=env,
                                      cwd=self.cwd, start_new_session=True)
        out.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(5)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def rss_mb(self) -> float:
        """Resident memory of the process and all its descendants (uvicorn workers), in MiB."""
        return sum(_rss_kb(pid) for pid in [self.pid, *descendants(self.pid)]) / 1024


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process and its descendants so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def venv_python() -> str:
    py = VENV_BIN / "python"
    return str(py) if py.exists() else sys.executable


def run_json(argv: list[str], timeout: float, env: dict[str, str] | None = None,
             marker: str = "BENCH_JSON ") -> dict:
    """Run a load generator to completion (in its own process) and parse its one result line."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=BENCH)
    for line in proc.stdout.splitlines():
        if line.startswith(marker):
            return json.loads(line[len(marker):])
    raise RuntimeError(f"{argv[0]} gave no result (exit {proc.returncode}): "
                       f"{(proc.stderr or proc.stdout).strip()[-600:]}")


def machine_busy() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, wall seconds) so far, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / tick, time.monotonic()


class Busy:
    """CPU use during a measurement: the whole machine, the target, the upstream, the load generator.

    `other_cores` is what none of ours used: other people's work on a shared machine. Where it is
    well above zero, the run was disturbed.
    """

    def __init__(self, target_pid: int | None, upstream_pid: int | None):
        import resource
        self._resource = resource
        self.pids = (target_pid, upstream_pid)
        self.m0 = machine_busy()
        self.t0 = [cpu_seconds(p) if p else 0.0 for p in self.pids]
        self.c0 = self._children()

    def _children(self) -> float:
        r = self._resource.getrusage(self._resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def done(self) -> dict:
        m1 = machine_busy()
        wall = max(m1[1] - self.m0[1], 1e-9)
        used = [(cpu_seconds(p) - t0) if p else 0.0 for p, t0 in zip(self.pids, self.t0)]
        load = self._children() - self.c0
        if self.pids[0] == self.pids[1]:
            used[1] = 0.0
        machine = (m1[0] - self.m0[0]) / wall
        ours = (sum(used) + load) / wall
        return {"cpu_pct": 100 * used[0] / wall, "machine_cores": machine,
                "other_cores": max(0.0, machine - ours)}
