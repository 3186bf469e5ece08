"""The state backend on every kind of Redis that redis-py connects to: one server, a Sentinel's
master, a Cluster (three real nodes made into one with `redis-cli --cluster create`). The keys'
counters and the providers' slots must run there as scripts, not fall back."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml

from gateway.config import ConfigError, parse_config
from gateway.redis_url import check

from .conftest import RedisServer, base_config

MESSAGES = [{"role": "user", "content": "How long does a refund take?"}]


def redis_cli(*args: str) -> str:
    binary = shutil.which("redis-cli")
    assert binary is not None, "redis-cli is not installed: run `make test`, which installs it (redis-tools)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=30, check=True).stdout


def cluster_port() -> int:
    """A free port whose cluster bus port (10000 above) is free too."""
    while True:
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port + 10000 > 65535:
                continue
            try:
                b.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[str]:
    nodes = []
    for i in range(3):
        (tmp_path / f"node{i}").mkdir()
        node = RedisServer(tmp_path / f"node{i}", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        node.port = cluster_port()
        nodes.append(node.start())
    try:
        redis_cli("--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes), "--cluster-replicas", "0",
                  "--cluster-yes")
        deadline = time.monotonic() + 20
        while "cluster_state:ok" not in redis_cli("-p", str(nodes[0].port), "cluster", "info"):
            assert time.monotonic() < deadline, "the cluster did not come up"
            time.sleep(0.1)
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[str]:
    master = RedisServer(tmp_path).start()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"sentinel monitor gatewaystate 127.0.0.1 {master.port} 1\n"
                    "sentinel down-after-milliseconds gatewaystate 5000\n")
    watcher = RedisServer(tmp_path, "--sentinel", config_file=conf).start()
    try:
        deadline = time.monotonic() + 20
        while str(master.port) not in redis_cli("-p", str(watcher.port), "sentinel", "get-master-addr-by-name",
                                                "gatewaystate"):
            assert time.monotonic() < deadline, "the sentinel does not know its master"
            time.sleep(0.1)
        yield f"redis+sentinel://127.0.0.1:{watcher.port}/gatewaystate/0"
    finally:
        watcher.stop()
        master.stop()


def limited(upstream, url: str) -> dict:
    cfg = base_config(upstream, state={"backend": "redis", "redis_url": url, "timeout_ms": 500})
    cfg["auth"] = {"keys": [{"name": "ops", "key": "sk-ops", "rpm": 3, "budget": {"usd": 5, "period": "month"}}]}
    cfg["providers"]["fake"]["max_concurrency"] = 2
    return cfg


@pytest.mark.parametrize("kind", ["server", "sentinel", "cluster"])
def test_limits_run_on_every_kind_of_redis(request, start_gateway, upstream, redis_server, kind):
    url = redis_server.url if kind == "server" else request.getfixturevalue(kind)
    gw = start_gateway(limited(upstream, url))
    headers = {"authorization": "Bearer sk-ops"}
    with httpx.Client(base_url=gw.url, headers=headers, timeout=30) as http:
        statuses = [http.post("/v1/chat/completions", json={"model": "support", "messages": MESSAGES,
                                                             "stream": i == 1}).status_code for i in range(4)]
    assert statuses == [200, 200, 200, 429]
    runtime = gw.runtime
    assert runtime.quota.errors == 0 and runtime.providers["fake"].limiter.errors == 0   # no fallback taken
    assert runtime.providers["fake"].limiter.in_flight == 0


@pytest.mark.parametrize("url, problem", [
    ("memcached://127.0.0.1:11211", "is not a Redis URL"),
    ("redis+sentinel://127.0.0.1:26379", "needs the service name"),
    ("redis+cluster://", "at least one host:port"),
    ("redis+cluster://127.0.0.1:seven", "not a number"),
])
def test_a_redis_url_that_cannot_work_is_refused_at_load(upstream, url, problem):
    assert problem in (check(url) or "")
    with pytest.raises(ConfigError) as refused:
        parse_config(yaml.safe_dump(base_config(upstream, state={"backend": "redis", "redis_url": url})))
    assert any("state.redis_url" in p and problem in p for p in refused.value.problems)
    assert check("redis://127.0.0.1:6379/0") is None and check("unix:///run/redis.sock?db=1") is None
