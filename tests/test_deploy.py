"""The deploy artefacts stay in step with the code and with each other.

The compose file is checked against the Compose Specification's JSON schema and the Kubernetes
manifests against the Kubernetes API's schemas, offline: both schema sets ship inside the `test`
extra's packages (check-jsonschema, kubernetes-validate). Then the parts must agree: the load
balancer and Prometheus name every gateway replica, Grafana's provisioning finds the data source
and the dashboard, and the gateway config the replicas mount reaches the compose Redis and Qdrant.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
REPLICAS_CONFIG = ROOT / "config/examples/replicas.yaml"
DASHBOARD = DEPLOY / "grafana/dashboard.json"


def need(module: str) -> ModuleType:
    """A test dependency, or a loud failure (never a skip) that says how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"{module} is not installed ({exc}): pip install -e '.[test]' brings it")


# ---- reading the compose file the way compose does ----------------------------------------------

def load_compose(path: Path = COMPOSE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def gateway_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The gateway replicas: the services built from this repository's Dockerfile."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


_DEFAULT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment as compose sets it when the host sets none of the variables."""
    env = service.get("environment", {})
    assert isinstance(env, dict), "write environment: as a mapping"
    return {k: _DEFAULT.sub(lambda m: m.group(2) or "", str(v)) for k, v in env.items()}


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, PurePosixPath, bool]]:
    """(host path, container path, read-only) of each bind mount; named volumes are not ones."""
    mounts = []
    for volume in service.get("volumes", ()):
        if isinstance(volume, dict):
            if volume.get("type") != "bind":
                continue
            source, target, read_only = volume["source"], volume["target"], bool(volume.get("read_only"))
        else:
            source, target, *mode = volume.split(":")
            if not source.startswith((".", "/")):
                continue
            read_only = "ro" in (mode[0].split(",") if mode else ())
        mounts.append(((COMPOSE.parent / source).resolve(), PurePosixPath(target), read_only))
    return mounts


def on_host(service: dict[str, Any], container_path: str) -> tuple[Path, PurePosixPath, bool]:
    """Where a path the container sees lives on the host: (host path, the mount's target, read-only)."""
    path = PurePosixPath(container_path)
    found = [(host, target, ro) for host, target, ro in bind_mounts(service)
             if path == target or target in path.parents]
    assert found, f"{container_path} is not on a bind mount of {service.get('image')}"
    host, target, read_only = max(found, key=lambda m: len(m[1].parts))   # the innermost mount
    return host.joinpath(*path.relative_to(target).parts), target, read_only


def service_named(compose: dict[str, Any], host: str | None, image: str) -> str:
    assert host in compose["services"], f"{host} is not a compose service"
    assert compose["services"][host]["image"].split(":")[0] == image, (host, image)
    return host


# ---- the schemas ----------------------------------------------------------------------------------

def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    need("check_jsonschema")
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True, text=True, timeout=60)


def test_compose_file_follows_the_compose_specification():
    result = check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_schema_check_refuses_a_broken_file(tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("    ports: [\"8080:8080\"]", "    port: [\"8080:8080\"]"))
    assert broken.read_text() != COMPOSE.read_text()
    result = check_compose(broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "'port' was unexpected" in result.stdout


def kubernetes_manifests() -> dict[Path, list[dict[str, Any]]]:
    """Every YAML document under deploy/ that is a Kubernetes object (it has apiVersion and kind)."""
    found: dict[Path, list[dict[str, Any]]] = {}
    for path in sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        objects = [d for d in docs if "apiVersion" in d and "kind" in d]
        if objects:
            found[path] = objects
    return found


def validate_kubernetes(doc: dict[str, Any]) -> str:
    kv = need("kubernetes_validate")
    version = kv.latest_version()
    kv.validate(doc, version, strict=True)   # raises; a kind without a schema raises too
    return version


def test_kubernetes_manifests_follow_the_kubernetes_schemas():
    kv = need("kubernetes_validate")
    manifests = kubernetes_manifests()
    assert DEPLOY / "k8s/gateway.yaml" in manifests
    assert set(manifests) >= set(DEPLOY.glob("k8s/*.yaml")), "a file under deploy/k8s/ holds no object"
    problems = []
    for path, docs in manifests.items():
        for doc in docs:
            try:
                validate_kubernetes(doc)
            except kv.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                problems.append(f"{path.relative_to(ROOT)}: {doc['kind']}/{doc['metadata']['name']}: "
                                f"{where}: {exc.message} (Kubernetes {exc.version})")
    assert not problems, "\n".join(problems)


def test_the_kubernetes_schema_check_refuses_a_broken_manifest():
    kv = need("kubernetes_validate")
    docs = kubernetes_manifests()[DEPLOY / "k8s/gateway.yaml"]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    typo = {**deployment, "spec": {**deployment["spec"], "replica": 3}}   # strict: unknown fields fail
    with pytest.raises(kv.ValidationError):
        validate_kubernetes(typo)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    wrong_type = json.loads(json.dumps(deployment))
    wrong_type["spec"]["template"]["spec"]["containers"][0] = {**container, "ports": [{"containerPort": "http"}]}
    with pytest.raises(kv.ValidationError):
        validate_kubernetes(wrong_type)


# ---- Kubernetes -----------------------------------------------------------------------------------

def test_kubernetes_manifests_parse_and_carry_the_replicas_config():
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s/gateway.yaml").read_text()) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "Service", "Service", "Service", "StatefulSet"]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    carried = config_map["data"]["gateway.yaml"]
    assert carried == REPLICAS_CONFIG.read_text()
    cfg = parse_config(carried, "deploy/k8s/gateway.yaml")
    assert cfg.cache.exact.backend == "redis" and cfg.cache.semantic.qdrant.url
    gateway = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "llm-gateway")
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


# ---- compose: the whole stack from one `docker compose up` ---------------------------------------

def test_compose_runs_the_whole_stack_with_two_replicas():
    compose = load_compose()
    services = compose["services"]
    gateways = gateway_services(compose)
    assert len(gateways) == 2, sorted(gateways)
    assert {"lb", "redis", "qdrant", "prometheus", "grafana"} <= set(services)
    for name, svc in gateways.items():
        # One container per name (no --scale, no deploy.replicas): the name is what nginx and
        # Prometheus address, so each name must be exactly one replica.
        assert svc.get("deploy", {}).get("replicas", 1) == 1, name
        assert (COMPOSE.parent / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        assert svc["restart"] == "unless-stopped"
    first, *others = gateways.values()
    assert all(other == first for other in others), "the replicas differ"
    for name, svc in services.items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image's tag"
    published = {name: [p.split(":")[0] for p in svc.get("ports", ())] for name, svc in services.items()}
    assert published["lb"] == ["8080"] and published["prometheus"] == ["9090"] and published["grafana"] == ["3000"]
    assert not any(published[name] for name in gateways), "reach the replicas through the load balancer"


def test_replicas_mount_the_config_directory_from_the_host():
    for name, svc in gateway_services(load_compose()).items():
        container_path = environment(svc)["GATEWAY_CONFIG"]
        host, target, read_only = on_host(svc, container_path)
        assert host == REPLICAS_CONFIG, (name, host)   # the file deploy/k8s's ConfigMap carries too
        assert read_only, f"{name}: mount the config read-only"
        # A directory, not the file: an edit saved by rename must reach the container (see compose.yaml).
        assert PurePosixPath(container_path) != target and host.parent.is_dir(), f"{name}: mount the directory"


def config_as_the_replica_sees_it(svc: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    host, _, _ = on_host(svc, environment(svc)["GATEWAY_CONFIG"])
    text = host.read_text()
    for name in set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)):
        monkeypatch.delenv(name, raising=False)   # only what the container has
    for name, value in environment(svc).items():
        monkeypatch.setenv(name, value)
    return parse_config(text, str(host))


def test_the_replicas_config_reaches_the_compose_redis_and_qdrant(monkeypatch):
    compose = load_compose()
    for name, svc in gateway_services(compose).items():
        cfg = config_as_the_replica_sees_it(svc, monkeypatch)
        assert cfg.server.host == "0.0.0.0", f"{name}: listen beyond the container's loopback"
        assert cfg.admin.watch, f"{name}: the config file is mounted to be watched"
        assert cfg.cache.exact.backend == "redis"
        redis = urlsplit(cfg.cache.exact.redis_url)
        assert redis.scheme == "redis" and redis.port == 6379
        service_named(compose, redis.hostname, "redis")
        assert cfg.cache.semantic.enabled
        qdrant = urlsplit(cfg.cache.semantic.qdrant.url)
        assert qdrant.port == 6333
        service_named(compose, qdrant.hostname, "qdrant/qdrant")
        assert {"redis", "qdrant"} <= set(svc["depends_on"])


def replica_targets(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """host:port of every replica, the port being the one its config listens on."""
    return {f"{name}:{config_as_the_replica_sees_it(svc, monkeypatch).server.port}"
            for name, svc in gateway_services(compose).items()}


def test_the_load_balancer_spreads_over_every_replica(monkeypatch):
    compose = load_compose()
    lb = compose["services"]["lb"]
    conf_path, _, read_only = on_host(lb, "/etc/nginx/conf.d/default.conf")
    assert conf_path == DEPLOY / "nginx-lb.conf" and read_only
    conf = conf_path.read_text()
    upstream = re.search(r"upstream\s+(\w+)\s*\{(.*?)\}", conf, re.S)
    assert upstream, "nginx-lb.conf has no upstream block"
    servers = set(re.findall(r"^\s*server\s+([^\s;]+)", upstream.group(2), re.M))
    assert servers == replica_targets(compose, monkeypatch)
    assert f"proxy_pass http://{upstream.group(1)};" in conf
    assert "proxy_buffering off;" in conf   # streams pass through as they arrive
    assert set(lb["depends_on"]) == set(gateway_services(compose))


def test_prometheus_scrapes_every_replica_and_loads_the_alert_rules(monkeypatch):
    compose = load_compose()
    prometheus = compose["services"]["prometheus"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in prometheus["command"] if "=" in arg)
    config_path, _, read_only = on_host(prometheus, flags["config.file"])
    assert config_path == DEPLOY / "prometheus/prometheus.yml" and read_only
    config = yaml.safe_load(config_path.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "gateway")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    assert targets == replica_targets(compose, monkeypatch)
    # rule_files are relative to the config file, in the container.
    container_dir = PurePosixPath(flags["config.file"]).parent
    rules = {on_host(prometheus, str(container_dir / f))[0] for f in config["rule_files"]}
    assert rules == {DEPLOY / "prometheus/alerts.yml"}
    assert "web.enable-lifecycle" in {a.removeprefix("--") for a in prometheus["command"]}   # POST /-/reload


def grafana_files(grafana: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    folder, _, read_only = on_host(grafana, f"/etc/grafana/provisioning/{kind}")
    assert read_only and folder.is_dir(), folder
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    assert files, f"no {kind} provisioning in {folder}"
    return [yaml.safe_load(f.read_text()) for f in files]


def test_grafana_provisions_the_prometheus_data_source_and_the_dashboard():
    compose = load_compose()
    grafana = compose["services"]["grafana"]
    prometheus_config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())

    sources = [s for f in grafana_files(grafana, "datasources") for s in f["datasources"]]
    assert len(sources) == 1
    (source,) = sources
    assert source["type"] == "prometheus" and source["isDefault"] and source["access"] == "proxy"
    url = urlsplit(source["url"])
    service_named(compose, url.hostname, "prom/prometheus")
    assert url.port == 9090 and not any("web.listen-address" in a for a in compose["services"]["prometheus"]["command"])
    assert source["jsonData"]["timeInterval"] == prometheus_config["global"]["scrape_interval"]

    providers = [p for f in grafana_files(grafana, "dashboards") for p in f["providers"]]
    assert [p["type"] for p in providers] == ["file"]
    folder, _, read_only = on_host(grafana, providers[0]["options"]["path"])
    assert read_only and sorted(folder.rglob("*.json")) == [DASHBOARD]
    home, _, _ = on_host(grafana, environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home == DASHBOARD

    dashboard_text = DASHBOARD.read_text()
    dashboard = json.loads(dashboard_text)
    # Provisioning does not fill in an exported dashboard's __inputs: the panels must pick their data
    # source through the dashboard's own variable, which takes the default data source of its type.
    assert "${DS_" not in dashboard_text
    variable = next(v for v in dashboard["templating"]["list"] if v["type"] == "datasource")
    assert variable["query"] == source["type"]
    for panel in dashboard["panels"]:
        if panel.get("datasource") is not None:
            assert panel["datasource"] == {"type": source["type"], "uid": "${" + variable["name"] + "}"}, panel["title"]
