"""`gateway explain` and POST /admin/explain: route, rule, targets with cost, cacheability, cache key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from .routing_fakes import MESSAGES, chat, fakes, fakes_started, routing_config  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent

ROUTES = {
    "auto": {
        "rules": [
            {"when": {"header": {"x-tier": "free"}}, "route": "cheap-model"},
            {"when": {"last_message_matches": "(?i)refund|invoice"}, "route": "support"},
        ],
        "default": "budgeted",
    },
    "support": {"strategy": "cascade", "targets": ["cheap-model", "mid-model", "strong-model"],
                "escalate_when": {"min_confidence": 0.7}},
    "budgeted": {"strategy": "cost", "targets": ["strong-model", "mid-model", "cheap-model"], "max_cost_usd": 0.001},
    "chat": {"strategy": "weighted", "targets": [{"model": "cheap-model", "weight": 3}, {"model": "mid-model", "weight": 1}]},
}
ADMIN = {"key": "sk-admin"}
REFUND = {"model": "auto", "temperature": 0, "messages": MESSAGES}


def explain_cli(config: Path, request: dict, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "request.json"
    path.write_bytes(orjson.dumps(request))
    return subprocess.run([sys.executable, "-m", "gateway.cli", "explain", "--config", str(config), str(path), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_cli_explains_route_rule_targets_and_cache_key(start_gateway, fakes, tmp_path):
    gw = start_gateway(routing_config(fakes, ROUTES, admin=ADMIN))
    result = explain_cli(gw.config_path, REFUND, tmp_path, "--api-key", "sk-client")  # the SDK client's key
    assert result.returncode == 0, result.stderr
    out = result.stdout
    rule_line = [i for i, l in enumerate(gw.config_path.read_text().splitlines(), 1) if l == "    - when:"][1]
    assert "model requested: auto" in out
    assert f"route auto -> support: rule 2 (line {rule_line}) when " in out and "refund|invoice" in out
    assert "route: support (strategy: cascade)" in out
    lines = out.splitlines()
    first, second, third = (lines.index(next(l for l in lines if l.startswith(f"  {i}. "))) for i in (1, 2, 3))
    assert lines[first].startswith("  1. cheap-model (provider cheap") and "~$0.0000" in lines[first]
    assert lines[second].startswith("  2. mid-model") and lines[third].startswith("  3. strong-model")
    assert "cache: cacheable: temperature is 0" in out
    key = next(l for l in lines if l.startswith("cache key: ")).split(": ")[1]

    # The key is the one the running gateway uses for the same request.
    raw, _ = chat(gw, "auto", temperature=0)
    assert raw.headers["x-gateway-route"] == "support"
    assert raw.headers["x-gateway-cache-key"] == key


def test_cli_json_for_a_request_over_budget_and_not_cacheable(start_gateway, fakes, tmp_path):
    gw = start_gateway(routing_config(fakes, ROUTES, admin=ADMIN))
    request = {"model": "auto", "temperature": 0.7, "max_tokens": 10000,
               "messages": [{"role": "user", "content": "Write me a long story"}]}
    result = explain_cli(gw.config_path, request, tmp_path, "--json")
    assert result.returncode == 1  # the gateway would refuse it
    report = orjson.loads(result.stdout)
    assert report["route"] == "budgeted" and report["resolution"] == [{"route": "auto", "picked": "budgeted", "by": "default"}]
    assert report["error"]["status"] == 402 and report["error"]["code"] == "budget_exceeded"
    assert [t["fits_budget"] for t in report["targets"]] == [False, False, False]
    assert report["estimated_tokens"] == {"prompt": 5, "output_at_most": 10000}  # 21 characters: ~5 tokens
    assert report["targets"][2]["estimated_cost_usd"] == round((5 * 0.10 + 10000 * 0.20) / 1e6, 8)
    assert report["cache"]["cacheable"] is False and report["cache"]["reason"] == "temperature is not 0"
    assert report["cache"]["key"].startswith("gw:v1:")

    headers = {"authorization": "Bearer sk-admin"}
    with gw.http() as http:
        served = http.post("/admin/explain", json=request, headers=headers).json()
        assert served == report  # the same report from the running gateway
        free = http.post("/admin/explain", json=REFUND, headers={**headers, "x-tier": "free"}).json()
        assert free["route"] == "cheap-model" and free["resolution"][0]["by"] == "rule 1"
        assert free["targets"][0]["circuit"] == "closed"
        weighted = http.post("/admin/explain", json={**REFUND, "model": "chat"}, headers=headers).json()
        assert [(t["model"], t["share"]) for t in weighted["targets"]] == [("cheap-model", 0.75), ("mid-model", 0.25)]
        unknown = http.post("/admin/explain", json={**REFUND, "model": "nope"}, headers=headers).json()
        assert unknown["error"]["status"] == 404
        assert http.post("/admin/explain", json=REFUND).status_code == 401
    assert sum(f.calls for f in fakes.values()) == 0  # explaining never calls an upstream
