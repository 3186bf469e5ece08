"""`gateway serve` as a user runs it: a real process, one or more workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import openai
import pytest
import yaml

from .conftest import base_config, spawn_gateway_serve


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_runs_the_gateway(tmp_path, upstream, workers):
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(base_config(upstream)))
    proc, port = spawn_gateway_serve(path, "--workers", str(workers))
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        for _ in range(4):
            answer = client.chat.completions.create(model="support", messages=[{"role": "user", "content": "ping"}])
            assert answer.choices[0].message.content == "Echo: ping"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught, as a well-behaved process does.
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Traceback" not in out


def test_serve_refuses_a_broken_config(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("providers: {}\n")
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)],
                            capture_output=True, text=True, env={**os.environ}, timeout=30)
    assert result.returncode == 1
    assert result.stderr.startswith(f"{path}:1: ")
