"""Instructions per request: what a request costs the target's process, counted, not timed.

Each target runs under valgrind's callgrind (user-space instructions of every thread of the
process; the kernel's work for its sockets is not in it). One keep-alive connection sends `--n`
requests (`--instructions-n` in run.py) one after another; the count is zeroed before them and
dumped after, so startup and the warm-up are left out. What runs now and then rather than per
request (a collection of the older GC generations, the loop's timers, callgrind_control's round
trip) comes in lumps of up to ~10 million instructions: negligible over 500 requests, more than a
request over 30. Two runs of the same code here, 300 requests each, agreed to 0.01%, whatever else
the machine was doing: where wrk's req/s drifts by 20% between runs on a shared machine, this
tells a 1% change apart. It is the A/B measure for a change on the hot path; req/s, P99 and the
peers stay with the load scenarios.

    .venv/bin/python bench/instructions.py [--tree LABEL=PATH ...] [--n 500] [--modes bypass,miss,hit]

alone compares gateway trees (a git worktree of an older commit, say) with the bare pass-through,
each started from its own tree; `make bench SCENARIO=instructions` runs it for this tree.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH, LOOPBACK, venv_python, free_port, wait_port  # noqa: E402
from targets import MODELS, gateway_config, mode_body  # noqa: E402
from upstream import Nginx  # noqa: E402

ROOT = BENCH.parent
MODES = ("bypass", "miss", "hit")
WARM = 100          # requests before the count: pools open, the hit's entry stored, code paths taken once
START_TIMEOUT = 600  # a process under callgrind starts ~50 times slower


def send(port: int, path: str, mode: str, n: int, prefix: str) -> None:
    """n requests of the pass-through scenarios' question in `mode` (a miss numbered after `prefix`)."""
    template = json.dumps(mode_body(MODELS["instant"], mode))
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=120)
    try:
        for i in range(n):
            body = template.replace("@N@", f"{prefix}-{i}").encode()
            conn.request("POST", path, body, {"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{mode} request {i}: status {response.status}")
    finally:
        conn.close()


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], capture_output=True, timeout=120, check=False)


def _dumped_total(out: Path, before: set[str]) -> int:
    """The `totals:` line of the dump callgrind wrote after `before` was listed."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = sorted(set(glob.glob(f"{out}.*")) - before, key=os.path.getmtime)
        for path in new:
            for line in Path(path).read_text(errors="replace").splitlines():
                if line.startswith("totals:"):
                    return int(line.split()[1])
        time.sleep(0.2)
    raise RuntimeError("callgrind wrote no dump")


def measure(label: str, argv: list[str], port: int, path: str, modes: list[str], n: int, work: Path,
            cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Start `argv` under callgrind; per mode, instructions per request over n requests."""
    out = work / f"callgrind.{label}"
    log_path = work / f"callgrind-{label}.log"
    for old in glob.glob(f"{out}*"):   # an earlier run's dumps, numbered as this run's will be
        os.remove(old)
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
                                cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=log_file, start_new_session=True)
    result = {}
    try:
        wait_port(port, START_TIMEOUT, proc)
        prefix = os.urandom(4).hex()
        for mode in modes:
            send(port, path, mode, WARM, prefix + "w")   # the hit's entry is the first of these
            before = set(glob.glob(f"{out}.*"))
            _control("-z", str(proc.pid))
            send(port, path, mode, n, prefix)
            _control("-d", f"{label}-{mode}", str(proc.pid))
            result[mode] = _dumped_total(out, before) / n
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return result


def run(nginx: Nginx, work: Path, n: int, modes: list[str], trees: dict[str, Path] | None = None,
        bare: bool = True) -> dict:
    """Bare pass-through (bypass only: it has no cache) and each gateway tree, counted in turn."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        return {"skipped": "valgrind is not installed (Debian: apt-get install valgrind)"}
    work.mkdir(parents=True, exist_ok=True)
    trees = trees or {"gateway": ROOT}
    rows: dict[str, dict[str, float]] = {}
    port = free_port()
    if bare:
        rows["bare"] = measure("bare", [venv_python(), str(BENCH / "bare.py"), "--upstream",
                                        f"http://{LOOPBACK}:{nginx.port}", "--port", str(port)],
                               port, "/instant/v1/chat/completions", ["bypass"], n, work, BENCH, dict(os.environ))
    for label, tree in trees.items():
        port = free_port()
        config = work / f"{label}.yaml"
        config.write_text(json.dumps(gateway_config(nginx, None, port, semantic=False)))  # JSON is YAML
        # The tree's own code first on the path: a worktree of another commit runs as itself.
        env = dict(os.environ, PYTHONPATH=str(tree))
        argv = [venv_python(), "-c", "import sys; from gateway.cli import main; sys.exit(main())",
                "serve", "--config", str(config), "--port", str(port), "--log-level", "warning"]
        rows[label] = measure(label, argv, port, "/v1/chat/completions", modes, n, work, tree, env)
    return {"n": n, "rows": rows}


def table(result: dict) -> list[str]:
    """Markdown rows: k instructions per request and the ratio to the bare pass-through."""
    rows = result["rows"]
    bare = rows.get("bare", {}).get("bypass")
    out = ["| target | mode | k instructions / request | x bare | bare / target |",
           "|---|---|---:|---:|---:|"]
    for label, modes in rows.items():
        for mode, ir in modes.items():
            against = f"{ir / bare:.2f} | {bare / ir:.0%}" if bare else " | "
            out.append(f"| {label} | {mode} | {ir / 1000:,.1f} | {against} |")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", action="append", default=[], help="LABEL=PATH of a gateway tree (default: this one)")
    p.add_argument("--n", type=int, default=500, help="requests counted per mode (default 500)")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--no-bare", action="store_true", help="leave the bare pass-through out")
    p.add_argument("--out", type=Path, default=Path("/tmp") / f"bench-instructions-{os.getpid()}")
    a = p.parse_args()
    trees = {}
    for spec in a.tree:
        label, sep, path = spec.partition("=")
        if not sep or not Path(path, "gateway").is_dir():
            p.error(f"--tree {spec}: give LABEL=PATH of a checkout with a gateway/ package")
        trees[label] = Path(path).resolve()
    nginx = Nginx(a.out / "nginx").start()
    try:
        result = run(nginx, a.out, a.n, a.modes.split(","), trees or None, bare=not a.no_bare)
    finally:
        nginx.stop()
    if "skipped" in result:
        print(result["skipped"])
        return 1
    print("\n".join(table(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
