"""`gateway explain`: what the gateway would do with a request, without calling any upstream.

The route and rule that match, the targets in order with their estimated cost, whether the answer
may come from (and go to) the cache and why, and the exact cache key. The same report comes from
`gateway explain --config PATH REQUEST.json` and `POST /admin/explain`.
"""

from __future__ import annotations

from typing import Any, Mapping

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .auth import require_admin
from .cache import Bypass, Cache
from .cache.keys import exact_key, tenant_of
from .cache.memory import MemoryStore
from .config import LoadedConfig, RouteConfig, StateConfig
from .errors import GatewayError, bad_request
from .inbound.openai import check_chat, parse_json_object
from .quota import Quota
from .routing.rules import Step
from .routing.strategies import estimated_costs, request_tokens
from .runtime import Runtime
from .upstream.client import Provider

DEFAULT_OUTPUT_TOKENS = RouteConfig().estimated_output_tokens


def explain(runtime: Runtime, payload: dict[str, Any], headers: Mapping[str, str],
            api_key: str | None = None) -> dict[str, Any]:
    """The report for one chat request body (`headers`: the request's, names lower-cased)."""
    report: dict[str, Any] = {"model_requested": payload.get("model")}
    try:
        if not isinstance(payload.get("model"), str) or not payload["model"]:
            raise bad_request("'model' is required and must be a non-empty string.", "model")
        check_chat(payload)
        authorization = f"Bearer {api_key}" if api_key else None
        key_name = runtime.authenticate(authorization)
        trace: list[Step] = []
        route = runtime.resolve(payload["model"], payload, headers, trace)
    except GatewayError as exc:
        report["error"] = _error(exc)
        return report
    report["route"] = route.name
    report["resolution"] = [_step(runtime, s) for s in trace]
    policy = route.policy
    report["strategy"] = policy.strategy
    budget = policy.budget
    prompt, output = request_tokens(payload, budget.output_tokens if budget else DEFAULT_OUTPUT_TOKENS)
    report["estimated_tokens"] = {"prompt": prompt, "output_at_most": output}
    if budget is not None:
        report["budget_usd"] = budget.max_cost_usd
        report["over_budget"] = budget.over_budget
    if policy.escalate is not None:
        escalate = policy.escalate
        report["escalate_when"] = {"finish_reason": sorted(escalate.finish_reasons),
                                   "min_confidence": escalate.min_confidence,
                                   "invalid_json": escalate.invalid_json, "empty": escalate.empty}
    try:
        ordered = list(policy.order(route, payload)) if policy.strategy in ("first", "cascade", "cost") else list(route.targets)
    except GatewayError as exc:  # cost: nothing fits the budget
        report["error"] = _error(exc)
        ordered = list(route.targets)
    report["targets"] = [_target(route, policy, t, i, prompt, output) for i, t in enumerate(ordered)]
    report["order"] = _ORDER[policy.strategy]
    report["cache"] = _cache(runtime, route, payload, headers, tenant_of(key_name, authorization))
    return report


def _error(exc: GatewayError) -> dict[str, Any]:
    return {"status": exc.status, "code": exc.code, "message": exc.message}


def _step(runtime: Runtime, step: Step) -> dict[str, Any]:
    out: dict[str, Any] = {"route": step.route, "picked": step.picked}
    if step.rule is None:
        out["by"] = "default"
    else:
        out["by"] = f"rule {step.rule + 1}"
        out["when"] = step.when
        line = runtime.loaded.lines.get(("routes", step.route, "rules", step.rule))
        if line is not None:
            out["line"] = line
    return out


def _target(route: Any, policy: Any, target: Any, index: int, prompt: int, output: int) -> dict[str, Any]:
    cost = estimated_costs([target], prompt, output)[0]
    out: dict[str, Any] = {
        "model": target.model, "provider": target.provider.name, "upstream_model": target.upstream_model,
        "estimated_cost_usd": round(cost, 8), "circuit": policy.health.state(target.model),
    }
    budget = policy.budget
    if budget is not None and budget.max_cost_usd is not None:
        out["fits_budget"] = cost <= budget.max_cost_usd
    if policy.strategy == "weighted":
        i = route.targets.index(target)
        out["weight"] = policy.weights[i]
        out["share"] = round(policy.weights[i] / policy.cum_weights[-1], 4)
    elif policy.strategy == "least-busy":
        limiter = target.provider.limiter
        out["in_flight"] = limiter.in_flight + limiter.queued
    elif policy.strategy == "latency":
        seconds = policy.latency.get(target.model)
        out["latency_ms"] = None if seconds is None else round(seconds * 1000, 1)
    return out


_ORDER = {
    "first": "in this order; the next only when one fails (fallback.on)",
    "cascade": "cheapest first; the next when the answer fails a check (escalation) or the target fails",
    "weighted": "one at random by weight per request; the others, in order, as fallbacks",
    "least-busy": "per request, fewest requests in flight first",
    "latency": "per request, lowest recent time to first byte (power of two choices); unknown targets first",
    "cost": "targets that fit the budget, by the route's preference; the rest are not called",
}


def _cache(runtime: Runtime, route: Any, payload: dict[str, Any], headers: Mapping[str, str],
           tenant: str) -> dict[str, Any]:
    key = exact_key(route.name, route.target_models, tenant, payload)
    try:
        plan = runtime.cache.plan(route.name, route.target_models, route.cache, payload, headers, tenant)
    except GatewayError as exc:
        return {"cacheable": False, "reason": exc.message, "key": key}
    if isinstance(plan, Bypass):
        return {"cacheable": False, "reason": plan.reason, "key": key}
    mode = route.cache.cacheable or runtime.cache.config.cacheable
    reason = "temperature is 0" if mode == "deterministic" else "the route caches every request (cacheable: always)"
    return {
        "cacheable": True, "reason": reason, "key": plan.key, "lookup": plan.lookup, "store": plan.store,
        "ttl_s": plan.ttl_s, "semantic": plan.partition is not None,
        "stored_when_finish_reason": sorted(plan.finish_reasons),
    }


# ---- without a running gateway ------------------------------------------------------------------

class _NotOpened:
    """Stands in for the semantic layer: the plan only asks whether there is one."""


def offline_runtime(loaded: LoadedConfig) -> Runtime:
    """A runtime that can route and plan but never connects: no pools, no Redis, no Qdrant."""
    config = loaded.config
    providers = {name: Provider(name, cfg) for name, cfg in config.providers.items()}
    semantic = _NotOpened() if config.cache.semantic.enabled and config.cache.cacheable != "never" else None
    cache = Cache(config.cache, MemoryStore(1, "lru"), semantic)
    return Runtime(loaded, providers, cache, Quota(StateConfig()))   # limits in memory: nothing counted elsewhere


def render(report: dict[str, Any]) -> str:
    """The report as text, for the terminal."""
    lines = [f"model requested: {report.get('model_requested')}"]
    for step in report.get("resolution", []):
        how = step["by"] + (f" (line {step['line']})" if "line" in step else "")
        when = f" when {orjson.dumps(step['when']).decode()}" if "when" in step else ""
        lines.append(f"  route {step['route']} -> {step['picked']}: {how}{when}")
    if "route" in report:
        lines.append(f"route: {report['route']} (strategy: {report['strategy']})")
        tokens = report["estimated_tokens"]
        lines.append(f"estimated tokens: {tokens['prompt']} prompt, up to {tokens['output_at_most']} output")
        if report.get("budget_usd") is not None:
            lines.append(f"budget: ${report['budget_usd']:.6f} per request (over budget: {report['over_budget']})")
        if "escalate_when" in report:
            lines.append(f"escalate when: {orjson.dumps(report['escalate_when']).decode()}")
        lines.append(f"targets ({report['order']}):")
        for i, t in enumerate(report["targets"], 1):
            extra = "".join(f", {k} {t[k]}" for k in ("weight", "share", "in_flight", "latency_ms", "fits_budget") if k in t)
            lines.append(f"  {i}. {t['model']} (provider {t['provider']}, upstream {t['upstream_model']}): "
                         f"~${t['estimated_cost_usd']:.8f}, circuit {t['circuit']}{extra}")
    if "error" in report:
        e = report["error"]
        lines.append(f"error: {e['status']} {e['code'] or ''} {e['message']}".replace("  ", " "))
    cache = report.get("cache")
    if cache is not None:
        verdict = "cacheable" if cache["cacheable"] else "not cached"
        lines.append(f"cache: {verdict}: {cache['reason']}")
        if cache["cacheable"]:
            lines.append(f"  lookup {cache['lookup']}, store {cache['store']}, ttl {cache['ttl_s']:g}s, "
                         f"semantic {cache['semantic']}")
        lines.append(f"cache key: {cache['key']}")
    return "\n".join(lines)


# ---- POST /admin/explain ------------------------------------------------------------------------

async def admin_explain(request: Request) -> Response:
    """The body is the chat request to explain; rules see this request's own headers. The client's
    key (for the tenant part of the cache key) may be given as `x-gateway-client-key`."""
    require_admin(request)
    payload = parse_json_object(await request.body())
    headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"}
    report = explain(request.app.state.runtime, payload, headers, headers.get("x-gateway-client-key"))
    return Response(orjson.dumps(report), 200, media_type="application/json")

