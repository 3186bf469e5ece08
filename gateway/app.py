"""The ASGI app: endpoints, the lifespan that opens provider pools, and OpenAI-shaped errors."""

from __future__ import annotations

import gc
import logging
import os
import re
import time
from contextlib import asynccontextmanager
from typing import Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route as HTTPRoute

from .auth import client_authorization, require_admin
from .config import LoadedConfig, default_config_path, load_config
from .errors import GatewayError, error_body, model_not_found
from . import workers
from .metrics import Snapshot, merge, metrics_endpoint
from .observe import Observer
from .proxy import Pipeline, count_tokens
from .record import RequestRecord
from .explain import admin_explain
from .reload import Reloader, admin_reload
from .runtime import Runtime

log = logging.getLogger("gateway")


# A client's request id is used as given when a header carries it as given everywhere it goes
# (back to the client, to providers, into the log): 1 to 128 printable ASCII characters. Any other
# is replaced by a new id rather than trimmed or re-encoded (an altered id matches nothing the
# client logged), and the log line keeps what the client sent in `client_request_id`.
REQUEST_ID = re.compile(rb"[\x20-\x7e]{1,128}")
MAX_CLIENT_REQUEST_ID = 128   # characters of an unusable id kept for the log

# The one path whose last part may be percent-encoded: a model id (the openai SDK encodes it, and
# route names may hold a "/"). Anywhere else an escape is refused (see Front).
ENCODED_ID_PREFIX = b"/v1/models/"


class Lane(Protocol):
    endpoint: str

    async def handle(self, request: Request) -> Response: ...


class Front:
    """The outermost ASGI app. Gives every request an id (the client's `x-request-id` when usable,
    else a new one) and echoes it back, refuses percent-encoded paths, and sends POSTs to the proxy
    endpoints straight to their pipeline: the hot path skips Starlette's router and exception
    middlewares (the pipeline answers its own errors). Everything else, lifespan included, goes to
    the Starlette app.

    It also counts the requests each runtime may be serving: a request is counted on the runtime
    current when it arrives; the pipeline reads the runtime a moment later, so it may use that one
    or a newer one, never an older one. A runtime replaced by a reload is therefore retired oldest
    first, each after its own count is zero (reload.Reloader): by then every request that could be
    using it is done. (One ASGI layer for all of it: each layer is a frame every resumption of a
    request's task passes through.)"""

    def __init__(self, app: Starlette, lanes: dict[str, Lane]):
        self.app = app
        self.state = app.state
        self.lanes = lanes

    def __getattr__(self, name: str) -> Any:  # app.state, app.router... of the Starlette app
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        runtime: Runtime | None = getattr(self.state, "runtime", None)   # None before the lifespan ran
        if runtime is not None:
            runtime.in_flight += 1
        try:
            rid = None
            for name, value in scope["headers"]:
                if name == b"x-request-id":
                    if REQUEST_ID.fullmatch(value):
                        rid = value.decode("ascii")
                    elif value:
                        scope["gateway.client_request_id"] = value.decode("utf-8", "backslashreplace")[:MAX_CLIENT_REQUEST_ID]
                    break
            if rid is None:
                rid = os.urandom(12).hex()
            scope["gateway.request_id"] = rid
            rid_header = (b"x-request-id", rid.encode("ascii"))
            started = False

            def send_with_id(message):
                # A plain function handing back the server's awaitable: no coroutine of its own per
                # message (a stream sends one per chunk).
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                    message["headers"] = [*message.get("headers", ()), rid_header]
                return send(message)

            raw_path = scope.get("raw_path")
            if raw_path is not None and b"%" in raw_path and not raw_path.startswith(ENCODED_ID_PREFIX):
                # The path served would be the decoded one, which a path filter in front of the gateway
                # (that reads the raw path) never saw: answered as the unknown path it is, as given.
                return await _refuse_encoded_path(self.app, scope, raw_path, receive, send_with_id)
            lane = self.lanes.get(scope["path"]) if scope["method"] == "POST" else None
            if lane is None:
                try:
                    return await self.app(scope, receive, send_with_id)
                except Exception:
                    if started:  # on_unexpected answered it, logged it and counted it
                        return
                    raise
            scope["app"] = self.app
            try:
                response = await lane.handle(Request(scope, receive))
            except ClientDisconnect:
                return
            except Exception:  # the pipeline answers its own errors: this is a last resort
                log.exception("unexpected error on %s", scope["path"])
                observe_edge(self.app, scope, lane.endpoint, 500, "internal_error")
                response = internal_error()
            await response(scope, receive, send_with_id)
        finally:
            if runtime is not None:
                runtime.in_flight -= 1


def internal_error() -> Response:
    return Response(error_body("The gateway hit an internal error.", "server_error"), 500,
                    media_type="application/json")


def observe_edge(app: Starlette, scope: dict[str, Any], endpoint: str, status: int, error_kind: str,
                 path: str | None = None) -> None:
    """Count and log a request answered outside the pipeline (an unknown or refused path, a
    failure), as the pipeline's own are: route "none", its `path` when given."""
    runtime: Runtime | None = getattr(app.state, "runtime", None)
    observer: Observer | None = getattr(app.state, "observer", None)
    if runtime is None or observer is None:
        return
    record = RequestRecord(scope.get("gateway.request_id", ""), endpoint)
    record.client_request_id = scope.get("gateway.client_request_id")
    record.status = status
    record.error_kind = error_kind
    if path is not None:
        record.path = path[:512]
    observer.finish(record, runtime)


async def _refuse_encoded_path(app: Starlette, scope: dict[str, Any], raw_path: bytes, receive, send) -> None:
    shown = raw_path.decode("latin-1")
    message = (f"Unknown path {shown[:256]}: the gateway does not serve percent-encoded paths. It serves "
               "/v1/chat/completions, /v1/embeddings and /v1/models, written plainly.")
    observe_edge(app, scope, "unknown", 404, "encoded_path", f"{scope['method']} {shown}")
    response = Response(error_body(message, "invalid_request_error"), 404, media_type="application/json")
    await response(scope, receive, send)


def json_response(data, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def _model_object(runtime: Runtime, name: str, created: int) -> dict[str, Any]:
    route = runtime.routes[name]
    owner = "gateway" if len(route.targets) > 1 or name in runtime.config.routes else route.targets[0].provider.name
    return {"id": name, "object": "model", "created": created, "owned_by": owner}


def _anthropic_model(name: str, created: int) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))}


async def list_models(request: Request) -> Response:
    """GET /v1/models: what the key presented may ask for; in Anthropic's list shape when the
    request carries `anthropic-version` (the anthropic SDK's `models.list()`)."""
    runtime: Runtime = request.app.state.runtime
    key = runtime.authenticate(client_authorization(request.headers))
    created = int(runtime_started(request))
    names = [name for name in runtime.routes if runtime.may_use(key, name)]
    if "anthropic-version" in request.headers:
        return json_response({"data": [_anthropic_model(name, created) for name in names], "has_more": False,
                              "first_id": names[0] if names else None, "last_id": names[-1] if names else None})
    return json_response({"object": "list", "data": [_model_object(runtime, name, created) for name in names]})


async def retrieve_model(request: Request) -> Response:
    """GET /v1/models/{id} (the SDK's `models.retrieve`): a route or model name the gateway serves."""
    runtime: Runtime = request.app.state.runtime
    key = runtime.authenticate(client_authorization(request.headers))
    name = request.path_params["model"]
    if name not in runtime.routes or not runtime.may_use(key, name):
        raise model_not_found(name)   # as OpenAI: "does not exist or you do not have access to it"
    if "anthropic-version" in request.headers:
        return json_response(_anthropic_model(name, int(runtime_started(request))))
    return json_response(_model_object(runtime, name, int(runtime_started(request))))


def runtime_started(request: Request) -> float:
    return request.app.state.started_at


async def admin_keys(request: Request) -> Response:
    """GET /admin/keys: per gateway key, its limits and what it used (this minute, this period)."""
    require_admin(request)
    runtime: Runtime = request.app.state.runtime
    return json_response({"backend": runtime.config.state.backend,
                          "keys": await runtime.quota.report(runtime.config.auth.keys)})


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready once a config is loaded. Open circuits do not fail readiness: they say "degraded" and
    name the targets. Every replica sees the same providers fail, so failing readiness would take
    all of them out of the load balancer at once: clients would get connection errors instead of
    the gateway's 503 with Retry-After, and no request would reach the gateway to try a circuit
    again and close it. The providers' health is for metrics and alerts (gateway_target_healthy)."""
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None or not runtime.providers:
        return json_response({"status": "not ready"}, 503)
    body: dict[str, Any] = {"status": "ready", "providers": sorted(runtime.providers), "routes": len(runtime.routes)}
    unhealthy = {name for name, healthy in runtime.health.snapshot().items() if not healthy}
    if unhealthy:
        body["status"] = "degraded"
        body["open_circuits"] = sorted(unhealthy)
        if all(t.model in unhealthy for route in runtime.routes.values() for t in route.targets):
            body["detail"] = "every target of every route has its circuit open"
    return json_response(body)


async def on_gateway_error(request: Request, exc: GatewayError) -> Response:
    return exc.response()


async def on_http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        message = f"Unknown path {request.url.path}. The gateway serves /v1/chat/completions, /v1/embeddings and /v1/models."
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
    else:
        message = str(exc.detail)
    if exc.status_code in (404, 405):
        _observe_unknown(request, exc.status_code)
    return Response(error_body(message, "invalid_request_error"), exc.status_code,
                    getattr(exc, "headers", None), media_type="application/json")


def _observe_unknown(request: Request, status: int) -> None:
    """A path (or method) the gateway does not serve is counted (route "none") and logged like a
    request: a client pointed at the wrong base URL shows in the metrics, not nowhere."""
    observe_edge(request.app, request.scope, "unknown", status,
                 "unknown_path" if status == 404 else "method_not_allowed", f"{request.method} {request.url.path}")


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """A failure of an endpoint other than the pipeline's (/v1/models, /admin/..., /metrics):
    answered, logged with its traceback, and counted and logged as a request (endpoint "other")."""
    log.exception("unexpected error on %s", request.url.path)
    observe_edge(request.app, request.scope, "other", 500, "internal_error", f"{request.method} {request.url.path}")
    return internal_error()


def create_app(loaded: LoadedConfig) -> Front:
    @asynccontextmanager
    async def lifespan(app: Starlette):
        app.state.started_at = time.time()
        app.state.observer = Observer(loaded.config, lambda: getattr(app.state, "runtime", None))
        app.state.runtime = await Runtime.start(loaded)
        app.state.reloader = Reloader(app.state, loaded.path)   # file watch, SIGHUP, /admin/reload
        app.state.reloader.start()
        peers = await _join_workers(app)
        # What startup made (config, pools, an embedding model's many objects) lives as long as the
        # process: take it out of the collector's view. Full collections over a heap with torch in
        # it took 30-110 ms and set the tail latency; frozen, none takes over 20 ms.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await app.state.reloader.close()
            if peers is not None:  # every request has had its answer: the final counts stay in the run's totals
                await peers.retire(await peers.snapshot())
            await app.state.runtime.close()
            app.state.observer.close()

    lanes = {"/v1/chat/completions": Pipeline("chat"), "/v1/embeddings": Pipeline("embeddings"),
             "/v1/messages": Pipeline("messages"), "/v1/responses": Pipeline("responses"),
             "/v1/completions": Pipeline("completions")}
    routes = [
        *(HTTPRoute(path, lane.handle, methods=["POST"]) for path, lane in lanes.items()),
        HTTPRoute("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        HTTPRoute("/v1/models", list_models, methods=["GET"]),
        HTTPRoute("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
        HTTPRoute("/healthz", healthz, methods=["GET"]),
        HTTPRoute("/readyz", readyz, methods=["GET"]),
        HTTPRoute("/metrics", metrics_endpoint, methods=["GET"]),
        HTTPRoute("/admin/reload", admin_reload, methods=["POST"]),
        HTTPRoute("/admin/explain", admin_explain, methods=["POST"]),
        HTTPRoute("/admin/keys", admin_keys, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={GatewayError: on_gateway_error, HTTPException: on_http_error, Exception: on_unexpected},
    )
    # No redirect from `/path/` to `/path`: Starlette builds its Location from the request's Host
    # header, which makes it an open redirect. A trailing slash is an unknown path (404) instead.
    app.router.redirect_slashes = False
    return Front(app, lanes)


async def _join_workers(app: Starlette) -> workers.Workers | None:
    """Under `gateway serve --workers N` (N > 1): listen for the other workers' scrapes, and ask
    them at ours (gateway/workers.py). Otherwise nothing: no socket, no GATEWAY_WORKERS_DIR."""
    directory = os.environ.get(workers.ENV)
    if not directory:
        return None
    observer = app.state.observer

    async def snapshot() -> Snapshot:
        runtime = app.state.runtime
        observer.count_semantic_spend(runtime)  # as Observer.exposition does before a scrape
        await observer.metrics.read_entries(runtime, workers.ASK_TIMEOUT_S / 2)  # inside the asker's timeout
        return observer.metrics.snapshot(runtime)

    peers = workers.Workers(directory, snapshot, merge)
    await peers.start()
    observer.metrics.peers = peers
    return peers


def app_from_env() -> Front:
    """Factory for `uvicorn --factory` and for `gateway serve --workers N`."""
    return create_app(load_config(default_config_path()))
