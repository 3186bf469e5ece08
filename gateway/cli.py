"""The `gateway` command: serve, check-config."""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import os
import signal
import socket
import sys

from .config import ConfigError, GatewayConfig, LoadedConfig, default_config_path, load_config

# uvicorn's own graceful-shutdown timeout is this much longer than server.shutdown_grace_s: the
# gateway ends the streams still running itself (gateway/drain.py) before uvicorn would cancel them.
SHUTDOWN_MARGIN_S = 2.0


def _load_or_exit(path: str):
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(1) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    loaded = _load_or_exit(args.path)
    cfg = loaded.config
    print(f"{args.path}: ok ({len(cfg.providers)} providers, {len(cfg.models)} models, {len(cfg.routes)} routes)")
    return 0


def per_worker_warnings(config: GatewayConfig, workers: int) -> list[str]:
    """What `--workers N` divides: limits counted in each worker's own memory."""
    if workers <= 1 or config.state.backend != "memory":
        return []
    warnings = [f"with {workers} workers and state.backend: memory, each worker allows each provider its own "
                f"max_concurrency (up to {workers} times as many calls in flight); set state.backend: redis to "
                "count them once"]
    limited = [k.name for k in config.auth.keys if k.rpm or k.tpm or k.budget]
    if limited:
        warnings.append(f"with {workers} workers and state.backend: memory, each worker counts the keys' rpm, tpm "
                        f"and budget on its own (keys {', '.join(limited)}): a key may get up to {workers} times "
                        "its limits; set state.backend: redis to share them")
    return warnings


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback one (a name is resolved as uvicorn will)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def open_gateway_refusal(loaded: LoadedConfig, host: str, from_flag: bool) -> str | None:
    """No auth.keys on an address others can reach: refused unless server.allow_open says it is meant."""
    config = loaded.config
    if config.auth.keys or config.server.allow_open or is_loopback(host):
        return None
    where = "--host" if from_flag else f"{loaded.path}:{loaded.lines.get(('server', 'host'), 1)}"
    return (f"{where}: the gateway would listen on {host}, not a loopback address, with no auth.keys: anyone "
            "who can reach it could use it (and spend the providers' keys). Add auth.keys, or set "
            "server.allow_open: true to serve it open on purpose.")


def open_gateway_warnings(config: GatewayConfig, host: str, port: int) -> list[str]:
    """With no auth.keys the gateway serves anyone who reaches it: say so, and whose tokens go where."""
    if config.auth.keys:
        return []
    # A bedrock provider without an api_key signs with the gateway's own AWS credentials.
    keyed = sorted(name for name, p in config.providers.items() if p.api_key is not None or p.type == "bedrock")
    passing = sorted(name for name, p in config.providers.items() if p.api_key is None and p.type != "bedrock")
    parts = [f"auth.keys is empty: the gateway is open, anyone who can reach {host}:{port} may use it"]
    if keyed:
        parts.append(f"calls to {', '.join(keyed)} are made with the provider's api_key for anyone")
    if passing:
        parts.append(f"{', '.join(passing)} (no api_key) receive each client's own Authorization header")
    return ["; ".join(parts)]


def cmd_serve(args: argparse.Namespace) -> int:
    import functools

    import uvicorn

    from .server import GatewayProtocol, Limits
    from .workers import ENV as WORKERS_DIR, make_run_dir, remove_run_dir

    loaded = _load_or_exit(args.config)
    server = loaded.config.server
    workers = args.workers or server.workers
    host = args.host or server.host
    port = args.port if args.port is not None else server.port
    refusal = open_gateway_refusal(loaded, host, bool(args.host))
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return 1
    for warning in [*open_gateway_warnings(loaded.config, host, port), *per_worker_warnings(loaded.config, workers)]:
        print(f"warning: {warning}", file=sys.stderr)
    # Workers import the app by name and read the config path from the environment.
    os.environ["GATEWAY_CONFIG"] = os.path.abspath(args.config)
    os.environ["GATEWAY_SERVE"] = "1"  # the app may take SIGHUP (reload): it owns the process
    # Several workers: a directory of this run's own, where each worker listens for the others'
    # scrapes so that /metrics from any of them is the sum of all (gateway/workers.py).
    run_dir = make_run_dir() if workers > 1 else None
    if run_dir is None:
        os.environ.pop(WORKERS_DIR, None)
    else:
        os.environ[WORKERS_DIR] = run_dir
    # Once its graceful shutdown is done, uvicorn raises the signal that began it again, under the
    # handler that was there before; the default one would end the process by SIGTERM (-15). The
    # stop was clean, so the exit status is 0. (Under --workers N the parent handles the signals,
    # and exits 0 itself once its workers are done.)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        uvicorn.run(
            "gateway.server:app_from_env",   # gateway.app's app inside the shutdown drain
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http=functools.partial(GatewayProtocol, limits=Limits.of(server)),  # httptools, with limits
            access_log=False,  # the gateway writes its own log line per request
            # The gateway reads no client address or scheme: no X-Forwarded-* rewriting, and one
            # ASGI layer less on every request.
            proxy_headers=False,
            log_level=args.log_level,
            timeout_graceful_shutdown=server.shutdown_grace_s + SHUTDOWN_MARGIN_S,
        )
    finally:
        if run_dir is not None:
            remove_run_dir(run_dir)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    import orjson

    from .explain import explain, offline_runtime, render

    loaded = _load_or_exit(args.config)
    try:
        with open(args.request, "rb") as f:
            payload = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError) as exc:
        print(f"{args.request}: cannot read a JSON request: {exc}", file=sys.stderr)
        return 1
    if not isinstance(payload, dict):
        print(f"{args.request}: the request must be a JSON object", file=sys.stderr)
        return 1
    headers = {}
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep:
            print(f"-H {header!r}: write it as 'name: value'", file=sys.stderr)
            return 1
        headers[name.strip().lower()] = value.strip()
    report = explain(offline_runtime(loaded), payload, headers, args.api_key)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if args.json else render(report))
    return 1 if "error" in report else 0


def cmd_hash_key(args: argparse.Namespace) -> int:
    """The key from stdin (one line; never an argument, which `ps` and shell history would show)."""
    key = sys.stdin.readline().strip()
    if not key:
        print("hash-key: give the key on stdin, e.g. `gateway hash-key < key.txt`", file=sys.stderr)
        return 1
    print(hashlib.sha256(key.encode()).hexdigest())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="OpenAI-compatible caching and routing gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", default=default_config_path(), help="config file (default: $GATEWAY_CONFIG or config/gateway.yaml)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file; problems print as PATH:LINE: message")
    check.add_argument("path", nargs="?", default=default_config_path())
    check.set_defaults(func=cmd_check_config)

    explain = sub.add_parser("explain", help="show how a request would be routed and cached, without calling any upstream")
    explain.add_argument("request", help="a chat completion request body (JSON file)")
    explain.add_argument("--config", default=default_config_path(), help="config file (default: $GATEWAY_CONFIG or config/gateway.yaml)")
    explain.add_argument("-H", "--header", action="append", default=[], help="a request header, 'name: value' (repeatable)")
    explain.add_argument("--api-key", help="the client's key, for the tenant part of the cache key")
    explain.add_argument("--json", action="store_true", help="print the report as JSON (as POST /admin/explain does)")
    explain.set_defaults(func=cmd_explain)

    hash_key = sub.add_parser("hash-key", help="read a gateway key from stdin, print its SHA-256 for auth.keys[].key_sha256")
    hash_key.set_defaults(func=cmd_hash_key)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
