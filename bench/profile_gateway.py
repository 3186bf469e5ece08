"""Profile the gateway under one scenario's load: pyinstrument (whole run) or py-spy (sampling).

  .venv/bin/python bench/profile_gateway.py [--scenario passthrough-32|slow-256|exact-32|streams]
                                    [--profiler pyinstrument|py-spy] [--duration 10]

Starts the nginx upstream and one gateway (one worker, the bench's config), drives the load, and
writes the profile to bench/results/profile-<timestamp>/. py-spy also needs `make bench` deps.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH, VENV_BIN, Proc, free_port, run_json, venv_python, wait_port  # noqa: E402
import report  # noqa: E402
from run import WRK_SCENARIOS  # noqa: E402
from targets import MODELS, gateway_config, mode_body  # noqa: E402
from upstream import Nginx  # noqa: E402


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="passthrough-32", choices=[*WRK_SCENARIOS, "streams"])
    p.add_argument("--profiler", default="pyinstrument", choices=["pyinstrument", "py-spy"])
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--semantic", action="store_true", help="configure the semantic layer (loads the embedder)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    out = (a.out or BENCH / "results" / f"profile-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    nginx = Nginx(out / "nginx").start()
    port = free_port()
    cfg_path = out / "gateway.yaml"
    cfg_path.write_text(json.dumps(gateway_config(nginx, None, port, semantic=a.semantic), indent=1))
    serve = ["-m", "gateway.cli", "serve", "--config", str(cfg_path), "--port", str(port), "--log-level", "warning"]
    if a.profiler == "pyinstrument":
        argv = [str(VENV_BIN / "pyinstrument"), "-r", "text", "--show-all", "-o", str(out / "pyinstrument.txt"),
                *serve]
    else:
        argv = [venv_python(), *serve]
    gw = Proc("gateway", argv, out / "gateway.log").start(stdout_to_null=True)
    try:
        wait_port(port, 120, gw.popen)
        time.sleep(1)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        spy = None
        if a.profiler == "py-spy":
            spy = subprocess.Popen([str(VENV_BIN / "py-spy"), "record", "--pid", str(gw.pid), "--duration",
                                    str(int(a.duration)), "--rate", "250", "--format", "raw", "--output",
                                    str(out / "py-spy.collapsed"), "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if a.scenario == "streams":
            res = run_json([venv_python(), str(BENCH / "streamclient.py"), "--url", url, "--n", "1000",
                            "--model", MODELS["paced"], "--timeout", "60"], 120)
        else:
            kind, conns, mode = WRK_SCENARIOS[a.scenario]
            body = out / "body.json"
            raw = json.dumps(mode_body(MODELS[kind], mode))
            if mode == "hit":  # stored before the profile starts
                run_json(["wrk", "-t1", "-c1", "-d1s", "-s", str(BENCH / "wrk" / "post.lua"), url], 60,
                         {"BENCH_BODY": str(_write(body, raw)), "BENCH_HEADERS": "", "BENCH_VARY": "0"})
            if mode == "miss":  # every request distinct, none met in an earlier profile
                raw = raw.replace("@N@", os.urandom(4).hex() + "-@N@")
            res = run_json(["wrk", "-t1", f"-c{conns}", f"-d{int(a.duration)}s", "--timeout=10s", "-s",
                            str(BENCH / "wrk" / "post.lua"), url], a.duration + 60,
                           {"BENCH_BODY": str(_write(body, raw)), "BENCH_HEADERS": "",
                            "BENCH_VARY": "unique" if mode == "miss" else "0"})
        print(json.dumps(res)[:400])
        if spy is not None:
            spy.wait(a.duration + 30)
            top = report.top_functions(out / "py-spy.collapsed", 40)
            lines = [f"{s:5.1f}% self {t:5.1f}% total  {fn}" for fn, s, t in top["top"]]
            (out / "py-spy-top.txt").write_text("\n".join(lines) + "\n")
            print("\n".join(lines[:25]))
    finally:
        if gw.alive():
            os.killpg(gw.pid, signal.SIGINT)  # uvicorn shuts down; pyinstrument then writes its report
            try:
                gw.popen.wait(60)
            except subprocess.TimeoutExpired:
                gw.stop()
        nginx.stop()
    if a.profiler == "pyinstrument":
        print(f"pyinstrument report: {out / 'pyinstrument.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
