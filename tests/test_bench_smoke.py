"""The benchmark harness end to end, every scenario for about a second, so it cannot rot.

Speed is never asserted here (bench/README.md is where numbers live); this checks that every
scenario still runs, measures something and reports it. nginx (with the echo module) and wrk are
required: a machine without them fails loudly (`make system-test-deps` installs them).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")


# About 2.5 minutes on a 2-core machine shared with other work (every scenario, its servers started
# one after another); the suite's 120 s is for tests that are not a harness run.
@pytest.mark.timeout(300)
def test_bench_smoke(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    assert nginx, "nginx is missing: run `make system-test-deps` (nginx-light)"
    assert ECHO_MODULE.exists(), "nginx's echo module is missing: run `make system-test-deps` (libnginx-mod-http-echo)"
    assert shutil.which("wrk"), "wrk is missing: run `make system-test-deps`"

    # On a timeout the bench gets SIGTERM, not SIGKILL: it stops the servers it started (each in a
    # session of its own, so that they would outlive a killed bench).
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        stdout, stderr = proc.communicate(timeout=270)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
        raise AssertionError("the smoke run took more than 270 s\n" + stdout[-4000:] + stderr[-4000:]) from None
    assert proc.returncode == 0, stdout[-4000:] + stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["errors"] == [], results["errors"]

    measured = {(r["scenario"], r["target"]) for r in results["rows"]}
    for scenario in ("passthrough-1", "passthrough-32", "miss-1", "miss-32", "slow-256", "exact-32"):
        for target in ("upstream", "bare", "gateway"):
            assert (scenario, target) in measured, (scenario, target)
    for scenario in ("passthrough-32", "slow-256", "exact-32"):
        assert (scenario, "gateway-w2") in measured
    for row in results["rows"]:
        assert row["requests"] > 0 and row["errors"] == 0, row
    assert results["exact_check"]["gateway"][-1] == "hit-exact"
    assert results["miss_check"]["gateway"] == ["miss", "hit-exact"]  # a cacheable miss, stored

    # Open loop (--smoke: one rate, half the bare's capacity, and 16 in flight closed-loop).
    openloop = results["openloop"]
    assert openloop["capacity"]["rps"] > 0 and len(openloop["rates"]) == 1
    asked = [("upstream", "bypass"), ("bare", "bypass"), ("gateway", "bypass"), ("gateway", "miss"), ("gateway", "hit")]
    assert sorted((r["target"], r["mode"]) for r in openloop["open"]) == sorted(asked)
    assert sorted((r["target"], r["mode"]) for r in openloop["closed"]) == sorted(asked)
    for row in openloop["open"]:
        assert row["ok"] > 0 and row["errors"] == 0 and row["latency_ms"]["p999"] is not None, row
        assert row["sent_rate"] > 0 and row["lag_ms"]["p99"] is not None, row
    for row in openloop["closed"]:
        assert row["requests"] > 0 and row["errors"] == 0, row

    guardrails = results["guardrails"]["runs"]
    assert set(guardrails) == {"plain", "guarded"}
    for run in guardrails.values():
        for s in run["streams"]:
            assert s["completed"] == s["streams"] > 0 and s["first_text_ms"]["n"] == s["completed"], s
        for row in run["json"]:
            assert row["requests"] > 0 and row["errors"] == 0, row

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
    (memory,) = results["memory"]  # --smoke: without the semantic layer only
    assert not memory["semantic"] and memory["idle_mb"] > 0 and len(memory["checkpoints"]) == 2 and memory["errors"] == 0
    # The soak (not in the bench's `all`; --smoke runs it for one 6 s "minute" with a slow upstream):
    # the fault reached the clients, the process was sampled, and no provider slot stayed taken.
    soak = results["soak"]
    assert soak["requests"] > 0 and soak["phases"][0]["fault"] == "slow", soak["phases"]
    assert soak["phases"][0]["during"]["errors"] > 0, soak["phases"][0]
    assert soak["resources"]["rss_start_mb"] > 0 and soak["resources"]["fds_start"] > 0
    assert soak["settle"]["final"] == 0, soak["settle"]

    table = (tmp_path / "results.md").read_text()
    for heading in ("## Targets", "## 1. pass-through JSON, 32 in flight", "## 1. cacheable misses, 32 in flight",
                    "## Open loop, 50 ms upstream", "### Closed loop", "## Guardrails", "## 3. concurrent SSE streams",
                    "## 5. semantic-cache lookups", "## 6. a day of support traffic", "## Memory", "## --workers 2",
                    "## Soak"):
        assert heading in table, heading
