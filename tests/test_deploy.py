"""The deploy artefacts stay in step with the code and with each other.

The compose file is checked against the Compose Specification's JSON schema and every Kubernetes
manifest against the Kubernetes API's schemas, offline: both schema sets ship inside the `test`
extra's packages (check-jsonschema, kubernetes-validate); a custom resource (the Prometheus
Operator's ServiceMonitor) against its CRD's schema, vendored in tests/data/. Then the parts must
agree: the load balancer and Prometheus name every gateway replica, Grafana's provisioning finds the
data source and the dashboard, the config every replica mounts reaches that deployment's own Redis
for the cache, a Redis of the limits' own that neither evicts nor forgets, and Qdrant, the
autoscaler, the disruption budget and the ServiceMonitor name the gateway's Deployment, pods and
Service, and the scrape sends the token that the config asks for.
"""

from __future__ import annotations

import functools
import importlib
import importlib.resources
import json
import math
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
K8S = DEPLOY / "k8s"
PROMETHEUS_CONFIG = DEPLOY / "prometheus/prometheus.yml"
# The CRDs of the custom resources under deploy/k8s/, as their projects publish them.
CRDS = [ROOT / "tests/data/monitoring.coreos.com_servicemonitors.yaml"]


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


def named_volume_at(compose: dict[str, Any], service: dict[str, Any], container_path: str) -> str:
    """The named volume that holds a path the container sees: what outlives the container."""
    path = PurePosixPath(container_path)
    found = []
    for volume in service.get("volumes", ()):
        # A bind mount is no named volume, and an anonymous one (no source) is a new volume for
        # every new container: neither counts.
        if isinstance(volume, dict):
            if volume.get("type") != "volume":
                continue
            source, target = volume.get("source"), PurePosixPath(volume["target"])
        else:
            source, *rest = volume.split(":")
            if not rest or source.startswith((".", "/")):
                continue
            target = PurePosixPath(rest[0])
        if source and (path == target or target in path.parents):
            found.append((target, source))
    assert found, f"{container_path} is on no named volume of {service.get('image')}"
    _, name = max(found, key=lambda m: len(m[0].parts))   # the innermost mount
    assert name in (compose.get("volumes") or {}), f"the volume {name} is not declared"
    return name


# ---- Redis: what its command line makes of it -----------------------------------------------------

# What redis-server does with a setting its command line leaves out. The official image ships no
# redis.conf and runs in /data, the directory Redis writes its files to.
REDIS_DEFAULTS = {"appendonly": "no", "maxmemory": "0", "maxmemory-policy": "noeviction", "dir": "/data"}
REDIS_UNITS = {"": 1, "k": 10**3, "kb": 2**10, "m": 10**6, "mb": 2**20, "g": 10**9, "gb": 2**30}
K8S_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def redis_settings(command: list[str]) -> dict[str, str]:
    """redis-server's settings from its command line (`--name value...`), over Redis's defaults."""
    assert command and command[0] == "redis-server", command
    given: dict[str, list[str]] = {}
    for arg in command[1:]:
        if arg.startswith("--"):
            given[arg.removeprefix("--")] = []
        else:
            assert given, f"{arg}: give every setting as --name value (no config file to read)"
            given[list(given)[-1]].append(arg)
    return {**REDIS_DEFAULTS, **{name: " ".join(values) for name, values in given.items()}}


def compose_redis_settings(compose: dict[str, Any], host: str | None) -> dict[str, str]:
    """The settings of the compose service named `host`, a Redis."""
    command = compose["services"][str(host)]["command"]
    assert isinstance(command, list), f"{host}: write command: as a list"
    return redis_settings(command)


def redis_bytes(value: str) -> int:
    """A Redis memory setting in bytes ("1gb" is 2**30, "1g" 10**9, as redis.conf says)."""
    number = re.fullmatch(r"(\d+)([a-z]*)", value.lower())
    assert number and number.group(2) in REDIS_UNITS, value
    return int(number.group(1)) * REDIS_UNITS[number.group(2)]


def k8s_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity in bytes ("1Gi" is 2**30, "1G" 10**9)."""
    number = re.fullmatch(r"(\d+)([A-Za-z]*)", str(quantity))
    assert number and number.group(2) in K8S_UNITS, quantity
    return int(number.group(1)) * K8S_UNITS[number.group(2)]


def check_cache_redis(settings: dict[str, str], where: str) -> None:
    """The cache's Redis may forget (an entry or a lock lost is a miss), but full it must make room:
    a Redis that refuses writes stops caching."""
    assert redis_bytes(settings["maxmemory"]) > 0, f"{where}: bound the cache's memory (--maxmemory)"
    assert settings["maxmemory-policy"] != "noeviction", f"{where}: the cache's Redis must evict when full"


def check_state_redis(settings: dict[str, str], where: str) -> None:
    """The limits' Redis must keep what it is told: a month's budget spend, the providers' slot
    leases. It never evicts (full, it refuses a write, and state.on_error decides), it logs every
    write to its append-only file (the caller checks that the file's directory outlives the
    server), and its memory is bounded, so that Redis refuses before the machine runs out."""
    assert settings["maxmemory-policy"] == "noeviction", f"{where}: the limits' Redis must never evict"
    assert settings["appendonly"] == "yes", f"{where}: the limits' Redis must keep an append-only file"
    assert redis_bytes(settings["maxmemory"]) > 0, f"{where}: bound the limits' memory (--maxmemory)"


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


# The $id of the definitions that kubernetes-validate's schemas share (ObjectMeta among them).
K8S_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD's OpenAPI schema as a JSON Schema that refuses unknown fields. The API server drops a
    field that a structural schema does not name, and `kubectl apply` (field validation Strict, its
    default) refuses the object instead; JSON Schema allows it unless told."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: strict(sub) for name, sub in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(out["additionalProperties"])
    if "items" in out:
        out["items"] = strict(out["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [strict(sub) for sub in out[key]]
    return out


@functools.cache
def custom_resource_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> JSON schema of each served version of the vendored CRDs: its
    openAPIV3Schema made strict, with `metadata` checked as the Kubernetes API checks it (the CRD
    says only `type: object`: the API server validates ObjectMeta itself)."""
    jsonschema = need("jsonschema")
    schemas = {}
    for path in CRDS:
        crd = yaml.safe_load(path.read_text())
        assert crd["kind"] == "CustomResourceDefinition", path
        spec = crd["spec"]
        kind = spec["names"]["kind"]
        for version in spec["versions"]:
            if not version["served"]:
                continue
            api_version = f"{spec['group']}/{version['name']}"
            schema = strict(version["schema"]["openAPIV3Schema"])
            schema["properties"] = {
                **schema["properties"],
                "apiVersion": {"type": "string", "const": api_version},
                "kind": {"type": "string", "const": kind},
                "metadata": {"$ref": f"{K8S_DEFINITIONS}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
            }
            schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind", "metadata"})
            jsonschema.Draft202012Validator.check_schema(schema)
            schemas[(api_version, kind)] = schema
    return schemas


def validate_kubernetes(doc: dict[str, Any]) -> str:
    """Validate one object, strictly: a built-in kind by kubernetes-validate's schemas, a custom
    resource by its vendored CRD's; a kind known to neither raises too (SchemaNotFoundError)."""
    kv = need("kubernetes_validate")
    version = kv.latest_version()
    schema = custom_resource_schemas().get((doc.get("apiVersion"), doc.get("kind")))
    if schema is None:
        kv.validate(doc, version, strict=True)   # raises; a kind without a schema raises too
        return version
    jsonschema, referencing = need("jsonschema"), need("referencing")
    definitions = importlib.resources.files("kubernetes_validate").joinpath(
        "kubernetes-json-schema", f"v{version}-local-strict", "_definitions.json")
    registry = referencing.Resource.from_contents(json.loads(definitions.read_text())) @ referencing.Registry()
    try:
        jsonschema.Draft202012Validator(schema, registry=registry).validate(doc)
    except jsonschema.ValidationError as exc:
        raise kv.ValidationError(exc, version) from None
    return version


def test_kubernetes_manifests_follow_the_kubernetes_schemas():
    kv = need("kubernetes_validate")
    manifests = kubernetes_manifests()
    expected = {K8S / "gateway.yaml", K8S / "scaling.yaml", K8S / "prometheus-operator/servicemonitor.yaml"}
    assert expected <= set(manifests)
    assert set(manifests) >= set(K8S.rglob("*.yaml")), "a file under deploy/k8s/ holds no object"
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


def test_kubectl_apply_of_the_k8s_folder_needs_no_custom_resource_definitions():
    # `kubectl apply -f deploy/k8s/` reads the folder's own files, not its subfolders': they must be
    # built-in kinds, so that a cluster without the Prometheus Operator takes them all. The
    # ServiceMonitor lives in prometheus-operator/, applied where the operator is.
    custom = set(custom_resource_schemas())
    for path in K8S.glob("*.yaml"):
        for doc in kubernetes_manifests()[path]:
            assert (doc["apiVersion"], doc["kind"]) not in custom, f"{path.name}: {doc['kind']} needs a CRD"
    for path in K8S.glob("*/*.yaml"):
        assert all((d["apiVersion"], d["kind"]) in custom for d in kubernetes_manifests()[path]), path


def test_the_kubernetes_schema_check_refuses_a_broken_manifest():
    kv = need("kubernetes_validate")
    docs = kubernetes_manifests()[K8S / "gateway.yaml"]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    typo = {**deployment, "spec": {**deployment["spec"], "replica": 3}}   # strict: unknown fields fail
    with pytest.raises(kv.ValidationError):
        validate_kubernetes(typo)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    wrong_type = json.loads(json.dumps(deployment))
    wrong_type["spec"]["template"]["spec"]["containers"][0] = {**container, "ports": [{"containerPort": "http"}]}
    with pytest.raises(kv.ValidationError):
        validate_kubernetes(wrong_type)
    unknown_kind = {**deployment, "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor"}
    with pytest.raises(kv.SchemaNotFoundError):   # no vendored CRD, no built-in schema: never a pass
        validate_kubernetes(unknown_kind)


@pytest.mark.parametrize("breakage", [
    "an unknown endpoint field", "a port given as a number", "an interval that is no duration",
    "no selector", "an unknown metadata field", "another apiVersion"])
def test_the_servicemonitor_schema_check_refuses_a_broken_one(breakage):
    kv = need("kubernetes_validate")
    (monitor,) = kubernetes_manifests()[K8S / "prometheus-operator/servicemonitor.yaml"]
    assert validate_kubernetes(monitor)
    broken = json.loads(json.dumps(monitor))
    endpoint = broken["spec"]["endpoints"][0]
    if breakage == "an unknown endpoint field":
        endpoint["paths"] = endpoint.pop("path")
    elif breakage == "a port given as a number":
        endpoint["port"] = 8080
    elif breakage == "an interval that is no duration":
        endpoint["interval"] = "15 seconds"
    elif breakage == "no selector":
        del broken["spec"]["selector"]
    elif breakage == "an unknown metadata field":
        broken["metadata"]["label"] = broken["metadata"].pop("labels")
    else:
        broken["apiVersion"] = "monitoring.coreos.com/v1alpha1"
    with pytest.raises((kv.ValidationError, kv.SchemaNotFoundError)):
        validate_kubernetes(broken)


# ---- Kubernetes: reading the manifests the way the cluster does -----------------------------------

def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path, docs in kubernetes_manifests().items() if K8S in path.parents for doc in docs]


def k8s_object(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name} in deploy/k8s/"
    return found[0]


def k8s_of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels only: these manifests use no matchExpressions) against labels."""
    assert set(selector) <= {"matchLabels"}, selector
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")


def pod_templates(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pod template of every workload: what the Services, the budget and the autoscaler reach."""
    return [o["spec"]["template"] for o in objects if o["kind"] in WORKLOADS]


def gateway_container(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod["spec"]["containers"] if c["image"].split(":")[0] == "llm-gateway"]
    return container


def gateway_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The gateway: the Deployment that runs this repository's image."""
    found = [d for d in k8s_of_kind(objects, "Deployment")
             if any(c["image"].split(":")[0] == "llm-gateway"
                    for c in d["spec"]["template"]["spec"]["containers"])]
    assert len(found) == 1, [d["metadata"]["name"] for d in found]
    deployment = found[0]
    assert selects(deployment["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    return deployment


def gateway_service(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pods = gateway_deployment(objects)["spec"]["template"]["metadata"]["labels"]
    found = [s for s in k8s_of_kind(objects, "Service") if selects({"matchLabels": s["spec"]["selector"]}, pods)]
    assert len(found) == 1, [s["metadata"]["name"] for s in found]
    return found[0]


def container_port(pod: dict[str, Any], target: int | str) -> tuple[dict[str, Any], int]:
    """The container and port number a Service's targetPort (a number or a port's name) reaches."""
    found = [(c, p["containerPort"]) for c in pod["spec"]["containers"] for p in c.get("ports", ())
             if target in (p["containerPort"], p.get("name"))]
    assert len(found) == 1, f"targetPort {target}: {len(found)} container ports"
    return found[0]


def workload_behind(objects: list[dict[str, Any]], host: str | None,
                    port: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The workload and its container that answer host:port inside the cluster (the host a
    Service's name)."""
    service = k8s_object(objects, "Service", str(host))
    ports = [p for p in service["spec"]["ports"] if p["port"] == port]
    assert len(ports) == 1, f"Service {host} has no port {port}"
    selector = {"matchLabels": service["spec"]["selector"]}
    workloads = [o for o in objects if o["kind"] in WORKLOADS
                 and selects(selector, o["spec"]["template"]["metadata"]["labels"])]
    assert len(workloads) == 1, f"Service {host} selects {len(workloads)} workloads"
    container, _ = container_port(workloads[0]["spec"]["template"], ports[0].get("targetPort", port))
    return workloads[0], container


def image_behind(objects: list[dict[str, Any]], host: str | None, port: int | None) -> str:
    """The image that answers host:port inside the cluster (the host a Service's name)."""
    _, container = workload_behind(objects, host, port)
    return container["image"].split(":")[0]


def k8s_redis(objects: list[dict[str, Any]],
              url: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """The workload, container and redis-server settings behind a redis:// URL, checked for what
    every Redis of the deployment needs: its resources, and room in its memory limit above
    maxmemory (else the kernel's OOM killer, not the Redis's policy, decides what a full one does)."""
    redis = urlsplit(url)
    assert redis.scheme == "redis", url
    workload, container = workload_behind(objects, redis.hostname, redis.port)
    assert container["image"].split(":")[0] == "redis", url
    settings = redis_settings([*container.get("command", ()), *container.get("args", ())])
    where = f"{workload['kind']} {workload['metadata']['name']}"
    resources = container.get("resources") or {}
    assert {"cpu", "memory"} <= set(resources.get("requests") or {}), f"{where}: request cpu and memory"
    assert "memory" in (resources.get("limits") or {}), f"{where}: give a memory limit"
    assert k8s_bytes(resources["limits"]["memory"]) > redis_bytes(settings["maxmemory"]), \
        f"{where}: maxmemory must sit below the memory limit"
    return workload, container, settings


def claim_at(workload: dict[str, Any], container: dict[str, Any], container_path: str) -> str:
    """The volumeClaimTemplate whose volume holds a path the container sees: a StatefulSet's own
    disk, which outlives the pod (an emptyDir or the container's filesystem goes with it)."""
    path = PurePosixPath(container_path)
    mounts = [m for m in container.get("volumeMounts", ())
              if path == PurePosixPath(m["mountPath"]) or PurePosixPath(m["mountPath"]) in path.parents]
    assert mounts, f"{container_path} is on no volume of {workload['metadata']['name']}"
    mount = max(mounts, key=lambda m: len(PurePosixPath(m["mountPath"]).parts))   # the innermost
    claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", ())}
    assert workload["kind"] == "StatefulSet" and mount["name"] in claims, \
        f"{container_path} is on {mount['name']}, no volumeClaimTemplate's volume: it goes with the pod"
    return mount["name"]


def secret_placeholder(ref: dict[str, Any]) -> str:
    return f"<Secret {ref['name']}, key {ref['key']}>"


def config_as_the_pod_sees_it(objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch):
    """The gateway's config as its pods read it: the file named by --config, from the ConfigMap mounted
    there, with the container's environment (a Secret's value reads as which Secret and key it is)."""
    pod = gateway_deployment(objects)["spec"]["template"]
    container = gateway_container(pod)
    args = container["args"]
    path = PurePosixPath(args[args.index("--config") + 1])
    (mount,) = [m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == path.parent]
    # A subPath mount never sees the ConfigMap's updates: the folder is mounted so that edits reload.
    assert "subPath" not in mount, "mount the ConfigMap's folder, not one file of it"
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert "items" not in volume["configMap"], "each key of the ConfigMap is a file of its name"
    config_map = k8s_object(objects, "ConfigMap", volume["configMap"]["name"])
    text = config_map["data"][path.name]
    env = {}
    for var in container.get("env", ()):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = secret_placeholder(var["valueFrom"]["secretKeyRef"])
    for name in set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)):
        monkeypatch.delenv(name, raising=False)   # only what the container has
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return parse_config(text, f"ConfigMap {config_map['metadata']['name']}: {path.name}")


def scaled(value: int | str, replicas: int) -> int:
    """A disruption budget's number or percentage of `replicas`, rounded up as the API server does."""
    if isinstance(value, int):
        return value
    assert re.fullmatch(r"\d+%", value), value
    return math.ceil(int(value[:-1]) * replicas / 100)


# ---- Kubernetes ------------------------------------------------------------------------------------

def test_kubernetes_manifests_parse_and_carry_the_replicas_config():
    docs = [d for d in yaml.safe_load_all((K8S / "gateway.yaml").read_text()) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "Service", "Service", "Service", "Service",
                     "StatefulSet", "StatefulSet"]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    carried = config_map["data"]["gateway.yaml"]
    assert carried == REPLICAS_CONFIG.read_text()
    cfg = parse_config(carried, "deploy/k8s/gateway.yaml")
    assert cfg.cache.exact.backend == "redis" and cfg.cache.semantic.qdrant.url
    container = gateway_container(gateway_deployment(k8s_objects())["spec"]["template"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_pods_config_reaches_the_deployments_own_redis_and_qdrant(monkeypatch):
    objects = k8s_objects()
    cfg = config_as_the_pod_sees_it(objects, monkeypatch)
    pod = gateway_deployment(objects)["spec"]["template"]
    assert cfg.server.host == "0.0.0.0", "listen beyond the pod's loopback"
    assert cfg.admin.watch, "the ConfigMap is mounted to be watched"
    _, listening = container_port(pod, "http")
    assert cfg.server.port == listening
    # The exact cache and the limits (state) each in a Redis of this deployment, so every replica
    # finds the same entries and counts a key's requests, tokens and spend in one place.
    assert cfg.cache.exact.backend == "redis" and cfg.state.backend == "redis"
    cache, _, cache_settings = k8s_redis(objects, cfg.cache.exact.redis_url)
    state, state_container, state_settings = k8s_redis(objects, cfg.state.redis_url)
    check_cache_redis(cache_settings, f"{cache['kind']} {cache['metadata']['name']}")
    # The limits in a Redis of their own: the cache's evicts and forgets, and the two never share a
    # server (two Services over one workload would).
    assert (state["kind"], state["metadata"]["name"]) != (cache["kind"], cache["metadata"]["name"]), \
        "the limits share the cache's Redis"
    where = f"StatefulSet {state['metadata']['name']}"
    check_state_redis(state_settings, where)
    claim_at(state, state_container, state_settings["dir"])
    # One server: two behind the Service would each count part of every limit.
    assert state["spec"].get("replicas", 1) == 1, f"{where}: one replica"
    assert cfg.cache.semantic.enabled
    qdrant = urlsplit(cfg.cache.semantic.qdrant.url)
    assert image_behind(objects, qdrant.hostname, qdrant.port) == "qdrant/qdrant"


def test_the_autoscaler_scales_the_gateway_deployment_on_cpu():
    objects = k8s_objects()
    deployment = gateway_deployment(objects)
    (hpa,) = k8s_of_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # The autoscaler owns the count: a `replicas:` in the Deployment would reset it on every apply.
    assert "replicas" not in deployment["spec"], "leave the replica count to the autoscaler"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    # Utilization is usage over the request: the autoscaler computes none unless every container
    # of the pod requests CPU.
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        assert container.get("resources", {}).get("requests", {}).get("cpu"), container["name"]


def test_the_disruption_budget_covers_the_gateway_pods_and_lets_drains_proceed():
    objects = k8s_objects()
    pods = gateway_deployment(objects)["spec"]["template"]["metadata"]["labels"]
    (pdb,) = k8s_of_kind(objects, "PodDisruptionBudget")
    (hpa,) = k8s_of_kind(objects, "HorizontalPodAutoscaler")
    selector = pdb["spec"]["selector"]
    assert selects(selector, pods)
    covered = [t for t in pod_templates(objects) if selects(selector, t["metadata"]["labels"])]
    assert len(covered) == 1, "the budget covers pods beyond the gateway's"
    limits = {"minAvailable", "maxUnavailable"} & set(pdb["spec"])
    assert len(limits) == 1, "give minAvailable or maxUnavailable"
    (limit,) = limits
    # At every count the autoscaler may run: a drain can always evict one gateway (a budget that
    # allows none blocks node drains forever) and never all of them.
    for replicas in range(hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"] + 1):
        value = scaled(pdb["spec"][limit], replicas)
        evictable = value if limit == "maxUnavailable" else replicas - value
        assert 1 <= evictable < replicas, f"{limit}: {pdb['spec'][limit]} at {replicas} replicas"


def endpoint_token(endpoint: dict[str, Any]) -> str | None:
    """The bearer token a ServiceMonitor endpoint sends, as the Secret and key it comes from."""
    if "authorization" in endpoint:
        assert endpoint["authorization"].get("type", "Bearer").lower() == "bearer"
        return secret_placeholder(endpoint["authorization"]["credentials"])
    if "bearerTokenSecret" in endpoint:   # the older, deprecated field
        return secret_placeholder(endpoint["bearerTokenSecret"])
    return None


def test_the_servicemonitor_scrapes_every_gateway_pod_with_the_configs_token(monkeypatch):
    objects = k8s_objects()
    service = gateway_service(objects)
    pod = gateway_deployment(objects)["spec"]["template"]
    cfg = config_as_the_pod_sees_it(objects, monkeypatch)
    (monitor,) = k8s_of_kind(objects, "ServiceMonitor")
    assert "namespaceSelector" not in monitor["spec"], "the Service is in the ServiceMonitor's namespace"
    selected = [s for s in k8s_of_kind(objects, "Service")
                if selects(monitor["spec"]["selector"], s["metadata"].get("labels", {}))]
    assert selected == [service], [s["metadata"]["name"] for s in selected]
    ports = {p.get("name"): p for p in service["spec"]["ports"]}
    prometheus_config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports, f"the Service has no port named {endpoint['port']}"
        _, number = container_port(pod, ports[endpoint["port"]]["targetPort"])
        assert number == cfg.server.port, "the scraped port is the one the gateway listens on"
        assert endpoint.get("path", "/metrics") == "/metrics"
        assert endpoint.get("scheme", "http") == "http"
        # As the compose Prometheus scrapes: Grafana's data source and the dashboard assume it.
        assert endpoint["interval"] == prometheus_config["global"]["scrape_interval"]
        # metrics.token set: the scrape must send it, from the same Secret key the pods read it
        # from; unset: /metrics is open and the scrape sends none.
        assert endpoint_token(endpoint) == cfg.metrics.token


# ---- compose: the whole stack from one `docker compose up` ---------------------------------------

def test_compose_runs_the_whole_stack_with_two_replicas():
    compose = load_compose()
    services = compose["services"]
    gateways = gateway_services(compose)
    assert len(gateways) == 2, sorted(gateways)
    assert {"lb", "redis", "redis-state", "qdrant", "prometheus", "grafana"} <= set(services)
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
        # The exact cache and the limits (state) each in a compose Redis: the replicas find the same
        # entries and count a key's requests, tokens and spend in one place.
        assert cfg.cache.exact.backend == "redis" and cfg.state.backend == "redis"
        cache, state = (urlsplit(url) for url in (cfg.cache.exact.redis_url, cfg.state.redis_url))
        for redis in (cache, state):
            assert redis.scheme == "redis" and redis.port == 6379
            service_named(compose, redis.hostname, "redis")
        check_cache_redis(compose_redis_settings(compose, cache.hostname), str(cache.hostname))
        # The limits in a Redis of their own: the cache's evicts and forgets.
        assert state.hostname != cache.hostname, f"{name}: the limits share the cache's Redis"
        settings = compose_redis_settings(compose, state.hostname)
        check_state_redis(settings, str(state.hostname))
        named_volume_at(compose, compose["services"][state.hostname], settings["dir"])
        assert cfg.cache.semantic.enabled
        qdrant = urlsplit(cfg.cache.semantic.qdrant.url)
        assert qdrant.port == 6333
        service_named(compose, qdrant.hostname, "qdrant/qdrant")
        assert {cache.hostname, state.hostname, qdrant.hostname} <= set(svc["depends_on"])
        # Waiting for a service to be healthy needs its healthcheck: without one compose refuses.
        for dependency, condition in svc["depends_on"].items():
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in compose["services"][dependency], f"{dependency} has no healthcheck"


def test_the_replicas_config_on_one_machine_uses_one_local_redis(monkeypatch):
    # Without the deployment's variables (`gateway serve --config config/examples/replicas.yaml` on
    # a developer's machine), one redis-server on loopback serves both the cache and the limits.
    text = REPLICAS_CONFIG.read_text()
    for name in set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)):
        monkeypatch.delenv(name, raising=False)
    cfg = parse_config(text, str(REPLICAS_CONFIG))
    assert cfg.cache.exact.redis_url == cfg.state.redis_url
    assert urlsplit(cfg.state.redis_url).hostname in ("127.0.0.1", "localhost", "::1")


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
    assert config_path == PROMETHEUS_CONFIG and read_only
    config = yaml.safe_load(config_path.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "gateway")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    # metrics.token set in the replicas' config: the scrape must send one; unset: none is needed.
    for name, svc in gateway_services(compose).items():
        token = config_as_the_replica_sees_it(svc, monkeypatch).metrics.token
        assert (token is not None) == ("authorization" in job), f"{name}: metrics.token is {token!r}"
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
    prometheus_config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())

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
