"""The benchmark harness end to end, every scenario for about a second, so it cannot rot.

Speed is never asserted here (bench/README.md is where numbers live); this checks that every
scenario still runs, measures something and reports it. nginx (with the echo module) and wrk are
required: a machine without them fails loudly (`make system-test-deps` installs them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")


def test_bench_smoke(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    assert nginx, "nginx is missing: run `make system-test-deps` (nginx-light)"
    assert ECHO_MODULE.exists(), "nginx's echo module is missing: run `make system-test-deps` (libnginx-mod-http-echo)"
    assert shutil.which("wrk"), "wrk is missing: run `make system-test-deps`"

    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=110, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["errors"] == [], results["errors"]

    measured = {(r["scenario"], r["target"]) for r in results["rows"]}
    for scenario in ("passthrough-1", "passthrough-32", "slow-256", "exact-32"):
        for target in ("upstream", "bare", "gateway"):
            assert (scenario, target) in measured, (scenario, target)
    for scenario in ("passthrough-32", "slow-256", "exact-32"):
        assert (scenario, "gateway-w2") in measured
    for row in results["rows"]:
        assert row["requests"] > 0 and row["errors"] == 0, row
    assert results["exact_check"]["gateway"][-1] == "hit-exact"

    streams = {s["target"]: s for s in results["streams"]}
    for target in ("upstream", "bare", "gateway"):
        s = streams[target]
        assert s["completed"] == s["streams"] > 0, s
        assert s["ttft_ms"]["p50"] is not None

    semantic = results["semantic"]
    assert semantic["fill"]["requests"] == semantic["entries"] and not semantic["fill"]["errors"]
    assert semantic["lookup"]["requests"] > 0 and not semantic["lookup"]["errors"]
    mix = results["mix"]
    assert mix["requests"] > 0 and not mix["errors"] and sum(mix["layers"].values()) == mix["requests"]
    assert set(mix["layers"]) <= {"miss", "hit-exact", "hit-semantic", "bypass"}, mix["layers"]
    memory = results["memory"]
    assert memory["idle_mb"] > 0 and len(memory["checkpoints"]) == 2 and memory["errors"] == 0
    # The soak (not in the bench's `all`; --smoke runs it for one 6 s "minute" with a slow upstream):
    # the fault reached the clients, the process was sampled, and no provider slot stayed taken.
    soak = results["soak"]
    assert soak["requests"] > 0 and soak["phases"][0]["fault"] == "slow", soak["phases"]
    assert soak["phases"][0]["during"]["errors"] > 0, soak["phases"][0]
    assert soak["resources"]["rss_start_mb"] > 0 and soak["resources"]["fds_start"] > 0
    assert soak["settle"]["final"] == 0, soak["settle"]

    table = (tmp_path / "results.md").read_text()
    for heading in ("## Targets", "## 1. pass-through JSON, 32 in flight", "## 3. concurrent SSE streams",
                    "## 5. semantic-cache lookups", "## 6. a day of support traffic", "## Memory", "## --workers 2",
                    "## Soak"):
        assert heading in table, heading
