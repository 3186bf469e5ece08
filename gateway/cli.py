"""The `gateway` command: serve, check-config."""

from __future__ import annotations

import argparse
import os
import sys

from .config import ConfigError, default_config_path, load_config


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


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    loaded = _load_or_exit(args.config)
    server = loaded.config.server
    # Workers import the app by name and read the config path from the environment.
    os.environ["GATEWAY_CONFIG"] = os.path.abspath(args.config)
    uvicorn.run(
        "gateway.app:app_from_env",
        factory=True,
        host=args.host or server.host,
        port=args.port if args.port is not None else server.port,
        workers=args.workers or server.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,  # the gateway writes its own log line per request
        log_level=args.log_level,
        timeout_graceful_shutdown=30,
    )
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

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
