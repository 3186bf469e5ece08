"""The deploy artefacts stay in step with the code: they parse, and the configs they carry are valid."""

from __future__ import annotations

from pathlib import Path

import yaml

from gateway.config import parse_config

ROOT = Path(__file__).resolve().parent.parent


def test_kubernetes_manifests_parse_and_carry_the_replicas_config():
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/k8s/gateway.yaml").read_text()) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "Service", "Service", "Service", "StatefulSet"]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    carried = config_map["data"]["gateway.yaml"]
    assert carried == (ROOT / "config/examples/replicas.yaml").read_text()
    cfg = parse_config(carried, "deploy/k8s/gateway.yaml")
    assert cfg.cache.exact.backend == "redis" and cfg.cache.semantic.qdrant.url
    gateway = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "llm-gateway")
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_compose_file_names_existing_files():
    compose = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())
    gateway = compose["services"]["gateway"]
    assert (ROOT / "deploy" / gateway["build"]["context"] / gateway["build"]["dockerfile"]).exists()
    config_path = gateway["environment"]["GATEWAY_CONFIG"].removeprefix("/app/")
    assert (ROOT / config_path).exists()
    assert {"redis", "qdrant", "lb"} <= set(compose["services"])
