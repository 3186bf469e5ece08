"""Every shell command and Python example in README.md, run as written against `make demo`'s servers.

A fenced `sh` block is a list of commands (a trailing backslash continues one); a `python` block is a
program. Both run from the repository's root with the venv's `gateway` on PATH. The demo listens on
free ports here, so `127.0.0.1:8080` in a block is read as the demo's address (the only rewrite).
A block that serves until stopped is marked `<!-- not run: why -->` on the line before it, and has a
test of its own (the demo: tests/test_demo.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from .test_demo import Demo, start_demo, stop_demo

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(?m)^```(sh|python)\n(.*?)^```", re.S)
ADMIN_KEY = "sk-readme-admin"


def blocks() -> list[tuple[str, str, int, str | None]]:
    """(language, code, line, why-not-run) of every sh and python block."""
    text = README.read_text()
    out = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = re.match(r"<!-- not run: (.*) -->", before)
        out.append((match[1], match[2], line, skip[1] if skip else None))
    return out


def commands(code: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[Demo]:
    os.environ["GATEWAY_ADMIN_KEY"] = ADMIN_KEY   # the demo config reads it; the README's curl sends it
    try:
        running = start_demo(tmp_path_factory.mktemp("readme-demo"))
    finally:
        del os.environ["GATEWAY_ADMIN_KEY"]
    yield running
    stop_demo(running)


def run(argv: list[str], demo: Demo, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GATEWAY_ADMIN_KEY": ADMIN_KEY, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_every_block_is_run_or_says_why_not():
    found = blocks()
    assert len([b for b in found if b[3] is None]) >= 6
    assert {b[2] for b in found if b[3] is not None}, "the serving blocks are marked"
    for language, code, line, why in found:
        assert why is None or why.strip(), f"README.md:{line}: say why a block is not run"


@pytest.mark.parametrize("language, code, line", [(b[0], b[1], b[2]) for b in blocks() if b[3] is None],
                         ids=lambda v: f"README.md:{v}" if isinstance(v, int) else "")
def test_readme_block_runs_as_written(language, code, line, demo, tmp_path):
    before = set(ROOT.iterdir())
    try:
        run_block(language, code.replace("127.0.0.1:8080", f"127.0.0.1:{demo.port}"), line, demo, tmp_path)
    finally:
        for made in set(ROOT.iterdir()) - before:   # what a block wrote (request.json) goes again
            made.unlink()


def run_block(language: str, code: str, line: int, demo: Demo, tmp_path: Path) -> None:
    if language == "python":
        done = run([sys.executable, "-c", code], demo, tmp_path)
        assert done.returncode == 0, f"README.md:{line}:\n{done.stderr}"
        return
    for command in commands(code):
        done = run(["bash", "-c", f"set -o pipefail; {command}"], demo, tmp_path)
        assert done.returncode == 0, f"README.md:{line}: {command}\n{done.stdout}\n{done.stderr}"
        assert '"error"' not in done.stdout, f"README.md:{line}: {command}\n{done.stdout}"
