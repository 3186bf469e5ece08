"""bench/instructions.py end to end: the gateway under callgrind, its exact hits counted (the bare
pass-through runs the same code path in `measure`; left out here for time: a process under
callgrind takes ~30 s to start)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_instructions_per_request(tmp_path: Path) -> None:
    if shutil.which("valgrind") is None:
        pytest.fail("valgrind is not installed: `make system-test-deps` installs it")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "instructions.py"), "--modes", "hit,bypass",
                           "--n", "100", "--no-bare", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = {line.split("|")[1].strip() + " " + line.split("|")[2].strip(): line for line in proc.stdout.splitlines()
            if line.startswith("| ") and "---" not in line and "target" not in line}
    assert set(rows) == {"gateway hit", "gateway bypass"}, proc.stdout

    def k_instructions(row: str) -> float:
        return float(row.split("|")[3].replace(",", ""))
    # A request costs hundreds of thousands of instructions (an answer through the Python stack);
    # an exact hit makes no upstream call: it costs less than a request that goes upstream.
    hit, bypass = k_instructions(rows["gateway hit"]), k_instructions(rows["gateway bypass"])
    assert 50 < hit < bypass < 20_000, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
