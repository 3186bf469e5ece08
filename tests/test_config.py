"""Config loading: interpolation, strictness, and `gateway check-config` naming the right line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
server:
  port: 8080
providers:
  openai:
    base_url: https://api.openai.com/v1
    api_key: ${TEST_GW_KEY:-}
models:
  gpt-4o-mini: {provider: openai, input_per_1m: 0.15, output_per_1m: 0.60}
routes:
  support: {targets: [gpt-4o-mini]}
"""


def check_config(path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(path)],
                          capture_output=True, text=True, env=env, cwd=ROOT)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_valid_file_exits_0(tmp_path):
    result = check_config(write(tmp_path, GOOD))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


@pytest.mark.parametrize("edit, line, words", [
    (("    api_key: ${TEST_GW_KEY:-}", "    api_key: ${TEST_GW_KEY:-}\n    max_concurency: 4"), 7,
     ["unknown key 'max_concurency'", "did you mean 'max_concurrency'"]),
    (("  port: 8080", "  port: eighty"), 2, ["server.port", "valid integer"]),
    (("support: {targets: [gpt-4o-mini]}", "support: {targets: [gpt-4o-mini, gpt-5-mega]}"), 10,
     ["route 'support' names model 'gpt-5-mega'", "not under models"]),
    (("{provider: openai,", "{provider: opnai,"), 8,
     ["provider 'opnai'", "did you mean 'openai'"]),
    (("${TEST_GW_KEY:-}", "${TEST_GW_UNSET_VARIABLE}"), 6,
     ["environment variable TEST_GW_UNSET_VARIABLE is not set"]),
    (("routes:\n", "routes:\n  bad: [\n"), 12, ["invalid YAML", "flow sequence that starts at line 10"]),
    (("  support: {targets: [gpt-4o-mini]}", "  support: {targets: []}"), 10, ["routes.support.targets"]),
    (("server:\n  port: 8080\n", "server:\n  port: 8080\n  hots: x\n"), 3, ["unknown key 'hots'", "did you mean 'host'"]),
])
def test_broken_file_names_the_line(tmp_path, edit, line, words):
    old, new = edit
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    result = check_config(path)
    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{path}:{line}: "), result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_every_problem_is_reported_once_each(tmp_path):
    text = GOOD.replace("  port: 8080", "  port: -1\n  colour: blue").replace("gpt-4o-mini]}", "missing-model]}")
    with pytest.raises(ConfigError) as err:
        parse_config(text, "cfg.yaml")
    problems = err.value.problems
    assert [p.split(":")[1] for p in problems] == ["2", "3"]  # schema problems first; cross-checks need a valid schema


def test_interpolation(monkeypatch):
    monkeypatch.setenv("TEST_GW_KEY", "sk-from-env")
    cfg = parse_config(GOOD.replace("port: 8080", "port: ${TEST_GW_PORT:-9090}"))
    assert cfg.providers["openai"].api_key == "sk-from-env"
    assert cfg.server.port == 9090
    monkeypatch.setenv("TEST_GW_KEY", "")
    assert parse_config(GOOD).providers["openai"].api_key is None  # empty means "not configured"


def test_gateway_config_env_is_the_default_path(tmp_path):
    path = write(tmp_path, GOOD)
    import os

    env = {**os.environ, "GATEWAY_CONFIG": str(path)}
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config"], capture_output=True,
                            text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0 and str(path) in result.stdout


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "config").rglob("*.yaml")))
def test_shipped_configs_are_valid(path):
    result = check_config(ROOT / path)
    assert result.returncode == 0, result.stderr


PROVIDERS = """\
providers:
  openai: {base_url: https://api.openai.com/v1}
  anthropic: {type: anthropic, api_key: sk-ant}
  gemini: {type: gemini}
  bedrock: {type: bedrock, region: eu-west-1}
  bedrock-fips: {type: bedrock, base_url: https://bedrock-runtime-fips.us-east-1.amazonaws.com}
models:
  gpt-4o-mini: {provider: openai}
routes:
  support: {targets: [gpt-4o-mini]}
"""


def test_provider_types_and_where_their_apis_live():
    providers = parse_config(PROVIDERS).providers
    assert providers["openai"].type == "openai"
    assert providers["anthropic"].base_url == "https://api.anthropic.com"
    assert providers["gemini"].base_url == "https://generativelanguage.googleapis.com"
    assert providers["bedrock"].base_url == "https://bedrock-runtime.eu-west-1.amazonaws.com"
    assert providers["bedrock-fips"].region == "us-east-1"


@pytest.mark.parametrize("line, words", [
    ("  bedrock: {type: bedrock}", ["providers.bedrock", "base_url is required (or region)"]),
    ("  bedrock: {type: bedrock, base_url: https://example.com}", ["providers.bedrock", "needs region"]),
    ("  bedrock: {api_key: sk-x}", ["providers.bedrock", "base_url is required"]),
    ("  bedrock: {type: grok}", ["providers.bedrock.type", "'openai', 'azure', 'anthropic', 'gemini' or 'bedrock'"]),
])
def test_a_provider_without_a_place_to_call_is_refused_with_its_line(tmp_path, line, words):
    result = check_config(write(tmp_path, PROVIDERS.replace("  bedrock: {type: bedrock, region: eu-west-1}", line)))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{tmp_path / 'gateway.yaml'}:5: "), result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
