"""The state backend's Redis from its URL: one server, Sentinel or Cluster, as redis-py connects them.

- `redis://[user:password@]host:port/db`, `rediss://...` (TLS), `unix:///path/to/redis.sock?db=0`:
  one server;
- `redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]`: the master that
  the Sentinels name for `service_name` (followed when they fail it over);
- `redis+cluster://[user:password@]host:port[,host:port...]`: a Redis Cluster, found from any of
  the nodes given. Every script and pipeline the gateway sends names keys of one hash slot (the
  key name or provider in `{}`), as Cluster requires.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

SENTINEL, CLUSTER = "redis+sentinel", "redis+cluster"


def _hosts(netloc: str) -> tuple[dict[str, str], list[tuple[str, int]]]:
    """The credentials and the host:port list of a URL's network location."""
    auth, _, hosts = netloc.rpartition("@")
    credentials: dict[str, str] = {}
    if auth:
        user, sep, password = auth.partition(":")
        if sep:
            credentials["password"] = unquote(password)
            if user:
                credentials["username"] = unquote(user)
        else:
            credentials["password"] = unquote(user)
    nodes = []
    for host in hosts.split(","):
        name, _, port = host.strip().rpartition(":")
        nodes.append((name or host.strip(), int(port) if port else 26379))
    return credentials, nodes


def check(url: str) -> str | None:
    """What is wrong with the URL (for the config's error), or None."""
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss", "unix"):
        return None
    if parts.scheme not in (SENTINEL, CLUSTER):
        return (f"'{parts.scheme}://' is not a Redis URL: use redis://, rediss://, unix://, "
                f"{SENTINEL}://host:port,.../service_name or {CLUSTER}://host:port,...")
    try:
        _, nodes = _hosts(parts.netloc)
    except ValueError:
        return "a port is not a number"
    if not nodes or not all(host for host, _ in nodes):
        return "name at least one host:port"
    if parts.scheme == SENTINEL and not parts.path.strip("/"):
        return f"{SENTINEL}:// needs the service name after the hosts: {SENTINEL}://host:26379/mymaster"
    return None


def connect(url: str, timeout_s: float | None, max_connections: int = 16) -> Any:
    """A redis.asyncio client; `timeout_s` None: reads wait as long as they must (a subscription)."""
    import redis.asyncio as redis

    parts = urlsplit(url)
    timeouts = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s if timeout_s is not None else 1.0}
    if parts.scheme == SENTINEL:
        from redis.asyncio.sentinel import Sentinel

        credentials, nodes = _hosts(parts.netloc)
        service, _, db = parts.path.strip("/").partition("/")
        sentinel = Sentinel(nodes, sentinel_kwargs=timeouts, **timeouts)
        return sentinel.master_for(service, db=int(db or 0), max_connections=max_connections,
                                   **credentials, **timeouts)
    if parts.scheme == CLUSTER:
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        credentials, nodes = _hosts(parts.netloc)
        return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes],
                            max_connections=max_connections, **credentials, **timeouts)
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=None, **timeouts)
    return redis.Redis(connection_pool=pool)


def subscriber(url: str) -> Any:
    """A client for a subscription: a publish reaches every node of a Cluster, so one node serves."""
    import redis.asyncio as redis

    parts = urlsplit(url)
    if parts.scheme == CLUSTER:
        credentials, nodes = _hosts(parts.netloc)
        host, port = nodes[0]
        return redis.Redis(host=host, port=port, socket_connect_timeout=1.0, health_check_interval=30,
                           **credentials)
    if parts.scheme == SENTINEL:
        return connect(url, None, max_connections=2)
    return redis.from_url(url, socket_connect_timeout=1.0, health_check_interval=30)
