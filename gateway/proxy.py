"""The request pipeline for /v1/chat/completions and /v1/embeddings.

parse -> authenticate -> resolve the route -> ask the cache (hit, lead or bypass)
      -> forward (targets, slots, fallbacks) -> answer (JSON, passthrough stream or replay)
      -> after the last byte: the lead completed (cache write), usage and cost, the observer.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

import orjson

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from .cache import Bypass, Hit, Lead
from .cache.embeddings import NO_USAGE, EmbeddingsCache, item_count
from .cache.keys import tenant_of
from .errors import GatewayError, error_body, upstream_invalid
from .auth import client_authorization
from .guardrails import apply_input
from .guardrails.chat import ChatGuard
from .inbound import messages as messages_api
from .inbound import completions as completions_api
from .inbound import responses as responses_api
from .inbound.body import read_body, request_headers
from .inbound.openai import (check_chat, check_embeddings, parse_json_object, strings_as_messages, wants_usage,
                             with_strings)
from .pricing import cost_usd
from .record import RequestRecord
from .routing import forward
from .routing.route import Route
from .routing.strategies import request_tokens
from . import tracing
from .runtime import Runtime
from .upstream.call import JsonAnswer, StreamAnswer, TargetFailed, UpstreamStatus, call_native
from .upstream.request import UpstreamRequest
from .upstream.sse import ReplayStream, StreamPassthrough, run_after
from .upstream.sse_codec import assemble, assemble_partial, called_tools, tail_usage, to_sse
from .upstream.target import Target
from .usage import estimate, token_counts

# A key's tpm reserves the request's max tokens; a request without any (and not on a cost route,
# which names its own) is taken to ask for this many, corrected to the real usage after the answer.
DEFAULT_OUTPUT_TOKENS = 256

# Request headers passed on to providers, besides the request id and (sometimes) Authorization.
TRACE_HEADERS = ("traceparent", "tracestate")

log = logging.getLogger("gateway")


# Inbound APIs besides chat completions and embeddings (gateway/inbound/): endpoint -> module.
APIS: dict[str, Any] = {api.ENDPOINT: api for api in (messages_api, responses_api, completions_api)}
# Request headers of an inbound API passed on to providers (those that speak it natively read them).
API_HEADERS = {messages_api.ENDPOINT: ("anthropic-beta",)}


class Pipeline:
    def __init__(self, endpoint: str):
        self.endpoint = endpoint  # "chat" | "embeddings" | an inbound API's ("messages")
        # The inbound API's module, None for chat completions and embeddings: its requests go in
        # its own shape to providers that speak it, in the chat form to the others.
        self.api = APIS.get(endpoint)
        self.path = "/embeddings" if endpoint == "embeddings" else "/chat/completions"
        self.check = check_embeddings if endpoint == "embeddings" else check_chat if self.api is None \
            else self.api.check

    async def handle(self, request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime  # read once: a reload swaps it for new requests
        scope = request.scope
        record = RequestRecord(scope["gateway.request_id"], self.endpoint)
        scope["gateway.record"] = record   # the shutdown drain marks a stream it ends (gateway/drain.py)
        record.client_request_id = scope.get("gateway.client_request_id")
        record.keep_answer = request.app.state.observer.content
        finish = _finisher(request, record, runtime)
        try:
            return await self._run(request, runtime, record, finish)
        except GatewayError as exc:
            record.status = exc.status
            record.error_kind = record.error_kind or exc.code or exc.type
            body = exc.body()
            if self.api is not None and not isinstance(exc, UpstreamStatus):   # a provider's error is shaped already
                body = self.api.error_body(exc.status, body)
            return Answered(body, exc.status, exc.headers, finish, getattr(exc, "content_type", "application/json"))
        except ClientDisconnect:  # gone before its body was read: no one to answer
            raise
        except Exception:
            # A bug, not a bad request: the client gets a 500 without the details, the log its
            # traceback, and the request is counted and has its line like any other.
            log.exception("unexpected error on %s", scope["path"])
            record.status = 500
            record.error_kind = "internal_error"
            body = error_body("The gateway hit an internal error.", "server_error")
            return Answered(body if self.api is None else self.api.error_body(500, body), 500, {}, finish)

    async def _run(self, request: Request, runtime: Runtime, record: RequestRecord,
                   finish: Callable[[], None]) -> Response:
        headers = request_headers(request.scope)
        if runtime.tracing is not None:
            record.trace = runtime.tracing.request(headers, record, request.scope["path"])
            # a traced answer is read whole, for its finish reasons (and its content, when asked)
            record.keep_answer = record.keep_answer or runtime.tracing.content or record.trace.recording
        client_auth = client_authorization(headers)
        key_name = runtime.authenticate(client_auth)
        payload = parse_json_object(await read_body(request, headers, runtime.max_body_bytes))
        requested = payload.get("model")
        if isinstance(requested, str):
            record.requested_model = requested[:256]
        self.check(payload)
        if isinstance(requested, str):
            runtime.check_model_allowed(key_name, requested)  # the name asked for, before any rule picks another
        record.messages = payload.get("messages", payload.get("input"))  # logged only with log.content
        _read_labels(record, payload, headers, runtime.config.log.metadata_keys)
        route = runtime.resolve(payload["model"], payload, headers)  # rules first: the cache key names the route
        record.route = route.name
        guard = None
        if self.endpoint in GUARDED:
            rules_in, rules_out = runtime.guardrails(route.name, key_name)
            if self.endpoint == "embeddings":
                rules_out = []   # an embedding has no text to filter on the way out
            if rules_in or rules_out:   # before the cache key: a masked prompt is what is asked and cached
                payload, guard = _guard_input(record, payload, rules_in, rules_out,
                                              EmbeddingsText if self.endpoint == "embeddings" else self.api)
        key = runtime.key(key_name)
        if key is not None:
            budget = route.policy.budget if route.policy is not None else None
            prompt, output = request_tokens(payload, budget.output_tokens if budget is not None else DEFAULT_OUTPUT_TOKENS)
            record.admission = await runtime.quota.admit(key, prompt + output)
        record.tenant = tenant_of(key_name, client_auth)
        upstream_headers = {"x-request-id": record.request_id}
        for name in TRACE_HEADERS:
            if name in headers:
                upstream_headers[name] = headers[name]
        if client_auth and not runtime.auth_required:
            upstream_headers["authorization"] = client_auth
        for name in API_HEADERS.get(self.endpoint, ()):
            if name in headers:
                upstream_headers[name] = headers[name]
        if self.endpoint == "embeddings":
            return await self._embeddings(route, UpstreamRequest(payload, self.path, False, upstream_headers, record),
                                          runtime.cache.embeddings, headers, finish)

        stream = record.stream = payload.get("stream") is True
        api = self.api
        # A stream is always asked for its usage chunk, to count it; a chat client sees it only if
        # it asked (another API's stream carries the usage in its own events).
        include_usage = wants_usage(payload) if api is None else False
        upstream = UpstreamRequest(payload, self.path, stream, upstream_headers, record,
                                   ask_usage=stream and not include_usage, api=api, guard=guard)
        if record.admission is not None and record.admission.key.budget is not None:
            record.cache_spend = []   # the semantic layer's calls are charged to the key's budget too
        if api is not None and not api.cacheable(payload):   # its answer depends on state kept elsewhere
            record.cache_bypass = "server-side state or hosted tools"
            return await self._upstream(route, upstream, include_usage, finish, None, guard)
        found = await runtime.cache.consult(route.name, route.target_models, route.cache, payload, headers,
                                            record.tenant, record.cache_spend, api and api.ENDPOINT, record.trace)
        if isinstance(found, Bypass):
            record.cache_bypass = found.reason
            return await self._upstream(route, upstream, include_usage, finish, None, guard)
        record.cache = "miss"
        record.cache_layers = found.layers
        if isinstance(found, Hit):
            return self._hit(found, route, record, include_usage, finish, payload, guard)
        try:
            return await self._upstream(route, upstream, include_usage, finish, found, guard)
        except BaseException:
            found.abandon()  # followers go upstream on their own
            raise

    async def _upstream(self, route: Route, upstream: UpstreamRequest, include_usage: bool,
                        finish: Callable[[], None], lead: Lead | None, guard: ChatGuard | None = None) -> Response:
        """Forward; the lead (if any) is answered and completed once the client has its answer."""
        record, payload = upstream.record, upstream.payload
        answer = await forward(route, upstream)
        headers = {"x-gateway-cache": record.cache}
        if lead is not None:
            headers["x-gateway-cache-key"] = lead.key

        if isinstance(answer, StreamAnswer):
            target = answer.target
            if guard is not None:   # one check from the first chunk to the last, ended in on_end
                guard.span = _check_span(record, tracing.GUARDRAILS_OUTPUT, guard.rules)
            if guard is not None and (self.api is None or self.api.GUARDS_OWN_STREAM):
                # the answer's text filtered as it streams (another API's: in its chat form, call.py)
                answer.chunks = guard.stream(answer.chunks, legacy=self.api is not None)

            async def on_end(completed: bool, chunks: list[bytes]) -> None:
                record.ended = time.perf_counter()
                if self.api is not None:   # the client's stream was the API's events: read as chat chunks
                    chunks = self.api.chat_chunks(chunks, target.upstream_model)
                completion = None
                # Only the usage is read from the stream's tail, unless the answer must be whole (for
                # the cache, log.content, or the names of the tools it called).
                usage = tail_usage(chunks) if completed and lead is None and not record.keep_answer \
                    and not called_tools(chunks) else None
                if usage is not None and "prompt_tokens" in usage:  # only the usage is needed
                    record.usage = usage
                    record.cost_usd = cost_usd(target.pricing, usage)
                elif completed:
                    try:
                        completion = assemble(chunks)
                    except ValueError:
                        completion = None
                if completion is not None:
                    self._count_usage(record, payload, completion, target)
                elif not completed:
                    # The client left (or the stream broke): the provider still bills the prompt and
                    # what it generated until then. Counted from the text sent so far, estimated.
                    partial = assemble_partial(chunks)
                    record.usage = estimate(payload, partial)
                    record.usage_estimated = True
                    record.cost_usd = cost_usd(target.pricing, record.usage)
                record.status = 200
                if guard is not None:
                    _guarded(record, guard, "output")
                if lead is not None:
                    # A stream the rules changed (masked, restored, stopped) is not the model's answer: not kept.
                    lead.answer(target.model, None if guard is not None and guard.changed else completion)
                    await lead.complete()
                finish()

            return StreamPassthrough(answer, _answer_headers(route, target.model, headers), record,
                                     upstream.ask_usage and self.api is None, on_end)

        data = answer.data
        self._count_usage(record, payload, data, answer.target)
        stored, raw = data, answer.raw
        if guard is not None and answer.status == 200:   # filtered before it is sent; kept as the model gave it
            data = record.answer = _filtered(record, guard, data)   # what the client got is what is logged
            if data is not stored:
                answer = JsonAnswer(answer.status, upstream.render(data), data, answer.target)
            if guard.blocked:
                stored = None
        after: Callable[[], Any] = finish
        if lead is not None:
            # Followers have their answer now; the store follows the reply. (Followers get the
            # model's answer, as a cache hit would, filtered by their own rules.)
            # (`raw` is the stored JSON when it is the chat completion's own, not another API's.)
            lead.answer(answer.target.model, stored if answer.status == 200 else None,
                        raw if self.api is None else None)

            async def complete_then_finish() -> None:
                record.ended = time.perf_counter()  # the reply is out; the store is not the client's wait
                await lead.complete()
                finish()

            after = complete_then_finish
        if upstream.stream:  # the provider answered a stream request with JSON: the client still gets SSE
            record.status = 200
            return ReplayStream(self._sse(data, include_usage, payload),
                                _answer_headers(route, answer.target.model, headers), record, after)
        return self._json(answer, route, record, headers, after)

    async def _embeddings(self, route: Route, upstream: UpstreamRequest, cache: EmbeddingsCache,
                          headers: dict[str, str], finish: Callable[[], None]) -> Response:
        """Each input item is looked up on its own; only the missing ones go upstream, in one call,
        and the answer is put back together in input order (gateway/cache/embeddings.py)."""
        record, payload = upstream.record, upstream.payload
        found = await cache.consult(route.name, route.target_models, route.cache, payload, headers, record.tenant)
        if isinstance(found, Bypass):
            record.cache_bypass = found.reason
            record.cache_items = {"bypass": item_count(payload.get("input"))}
            answer = await forward(route, upstream)
            assert isinstance(answer, JsonAnswer)
            return self._json(answer, route, record, {"x-gateway-cache": "bypass"}, finish)
        record.cache = found.result
        record.cache_items = found.counts
        if not found.missing:  # all hits: nothing sent, nothing spent
            record.status = 200
            record.model = record.saved_model = found.model
            record.usage = dict(NO_USAGE)
            extra = {"x-gateway-cache": record.cache, "x-gateway-cost-usd": "0.00000000"}
            return Answered(found.answer(), 200, _answer_headers(route, found.model, extra), finish)
        if not found.whole:
            upstream = UpstreamRequest(found.upstream_payload(payload), self.path, False, upstream.headers, record)
        answer = await forward(route, upstream)
        assert isinstance(answer, JsonAnswer)
        body = found.merge(answer.data, answer.raw, answer.target.model)
        if body is None:  # paid for, but not one embedding per item sent: it cannot be put together
            _embeddings_usage(record, answer)
            raise upstream_invalid(answer.target.provider.name, "the embeddings do not match the input sent")
        after: Callable[[], Any] = finish
        if found.store:
            async def store_then_finish() -> None:
                record.ended = time.perf_counter()  # the reply is out; the store is not the client's wait
                await cache.put(found)
                finish()

            after = store_then_finish
        if body is not answer.raw:
            answer = JsonAnswer(answer.status, body, answer.data, answer.target)
        return self._json(answer, route, record, {"x-gateway-cache": record.cache}, after)

    def _json(self, answer: JsonAnswer, route: Route, record: RequestRecord, headers: dict[str, str],
              after: Callable[[], Any]) -> Response:
        record.status = answer.status
        if self.endpoint != "chat":
            _embeddings_usage(record, answer)
        headers = _answer_headers(route, answer.target.model, headers)
        headers["x-gateway-cost-usd"] = f"{record.cost_usd:.8f}"
        return Answered(answer.raw, answer.status, headers, after)

    def _count_usage(self, record: RequestRecord, payload: dict[str, Any], completion: dict[str, Any],
                     target: Target) -> None:
        usage = completion.get("usage")
        if not isinstance(usage, dict) or "prompt_tokens" not in usage:
            usage = estimate(payload, completion)
            record.usage_estimated = True
        record.usage = usage
        record.cost_usd = cost_usd(target.pricing, usage)
        record.answer = completion

    def _hit(self, hit: Hit, route: Route, record: RequestRecord, include_usage: bool,
             finish: Callable[[], None], payload: dict[str, Any], guard: ChatGuard | None = None) -> Response:
        completion = hit.entry.completion
        if guard is not None:   # a cached answer meets the rules in force now, and this request's placeholders
            completion = _filtered(record, guard, completion)
        model = hit.entry.model or route.targets[0].model
        record.cache = hit.kind
        record.coalesced = hit.coalesced
        record.status = 200
        record.model = record.saved_model = model
        record.similarity = hit.similarity
        record.judge_usage = hit.judge_usage
        record.answer = completion
        usage = completion.get("usage")
        record.usage = usage if isinstance(usage, dict) else None
        headers = _answer_headers(route, model, {"x-gateway-cache": hit.kind, "x-gateway-cache-key": hit.key})
        if hit.similarity is not None:
            headers["x-gateway-similarity"] = f"{hit.similarity:.4f}"
        if record.stream:
            return ReplayStream(self._sse(completion, include_usage, payload), headers, record, finish)
        headers["x-gateway-cost-usd"] = "0.00000000"
        if self.api is not None:
            body = self.api.render(completion, payload)
        else:   # the stored bytes, unless the rules changed the answer
            body = hit.entry.body if completion is hit.entry.completion else orjson.dumps(completion)
        return Answered(body, 200, headers, finish)

    def _sse(self, completion: dict[str, Any], include_usage: bool, payload: dict[str, Any]) -> list[bytes]:
        """A whole answer as the client's stream: chat chunks, or the inbound API's events."""
        if self.api is None:
            return to_sse(completion, include_usage)
        return self.api.replay(to_sse(completion, True), payload)


async def count_tokens(request: Request) -> Response:
    """POST /v1/messages/count_tokens (the anthropic SDK's `messages.count_tokens`): the provider's
    own count when the route's first target speaks Messages natively, else an estimate from the
    prompt's text, marked `x-gateway-tokens-estimated: true`. Errors in Anthropic's shape."""
    runtime: Runtime = request.app.state.runtime
    headers = request_headers(request.scope)
    try:
        client_auth = client_authorization(headers)
        key_name = runtime.authenticate(client_auth)
        payload = parse_json_object(await read_body(request, headers, runtime.max_body_bytes))
        messages_api.check({**payload, "max_tokens": 1})   # count_tokens takes no max_tokens
        runtime.check_model_allowed(key_name, payload["model"])
        route = runtime.resolve(payload["model"], payload, headers)
        target = route.targets[0]
        if "count_tokens" not in target.provider.adapter.native:
            return Response(orjson.dumps({"input_tokens": messages_api.estimate_tokens(payload)}), 200,
                            {"x-gateway-tokens-estimated": "true", "x-gateway-target": target.model},
                            media_type="application/json")
        sent = {"x-request-id": request.scope["gateway.request_id"]}
        if client_auth and not runtime.auth_required:
            sent["authorization"] = client_auth
        for name in API_HEADERS[messages_api.ENDPOINT]:
            if name in headers:
                sent[name] = headers[name]
        try:
            answer = await call_native(target, "count_tokens", payload, sent)
        except TargetFailed as exc:
            raise exc.error from None
        return Response(answer.raw, 200, {"x-gateway-target": target.model}, media_type="application/json")
    except GatewayError as exc:
        body = exc.body() if isinstance(exc, UpstreamStatus) else messages_api.error_body(exc.status, exc.body())
        return Response(body, exc.status, exc.headers, media_type="application/json")


class Answered(Response):
    """A whole (non-streamed) answer, and what to do once its last byte is out (no thread hop:
    `after` runs on the event loop, unlike a sync BackgroundTask)."""

    def __init__(self, body: bytes, status: int, headers: dict[str, str], after: Callable[[], Any],
                 media_type: str = "application/json"):
        super().__init__(body, status, headers, media_type=media_type)
        self.after = after

    async def __call__(self, scope, receive, send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self.body})
        finally:
            await run_after(self.after)


def _embeddings_usage(record: RequestRecord, answer: JsonAnswer) -> None:
    """An embeddings answer's usage is what the provider billed for the items it was sent."""
    record.usage = answer.data.get("usage") if isinstance(answer.data.get("usage"), dict) else None
    record.cost_usd = cost_usd(answer.target.pricing, record.usage)


class EmbeddingsText:
    """Where an embeddings request's text is, for the input rules: its string inputs (token arrays
    are left alone). An embedding has no text to filter on the way out."""

    GUARDED_PARAM = "input"

    @staticmethod
    def guarded_text(payload: dict[str, Any]) -> list[dict[str, Any]]:
        return strings_as_messages(payload.get("input"))

    @staticmethod
    def with_guarded_text(payload: dict[str, Any], masked: list[dict[str, Any]]) -> dict[str, Any]:
        return {**payload, "input": with_strings(payload["input"], masked)}


# The endpoints guardrails apply to: chat completions (their `messages`), embeddings (input rules
# only), and the inbound APIs whose modules say where their text is (`guarded_text`, `with_guarded_text`).
GUARDED = frozenset({"chat", "embeddings", messages_api.ENDPOINT, responses_api.ENDPOINT, completions_api.ENDPOINT})


def _guard_input(record: RequestRecord, payload: dict[str, Any], rules_in: list[Any],
                 rules_out: list[Any], api: Any) -> tuple[dict[str, Any], ChatGuard | None]:
    """The input rules on the request's text: the payload with it masked (400 `content_filter`
    when a rule blocks), and the output rules' guard for its answer."""
    masker = restorer = None
    if rules_in:
        given = payload["messages"] if api is None else api.guarded_text(payload)
        span = _check_span(record, tracing.GUARDRAILS_INPUT, rules_in)
        found = apply_input(rules_in, given)
        for fired in found.fired:
            record.guardrails += (("input", fired.rule, fired.action),)
            tracing.guardrail(record.trace, "input", fired.rule, fired.action)
        tracing.end(span, _checked(found.fired, found.blocked))
        if found.blocked is not None:
            raise GatewayError(400, f"The request was stopped by the gateway's guardrail '{found.blocked}'.",
                               "invalid_request_error", "content_filter",
                               "messages" if api is None else api.GUARDED_PARAM)
        if found.messages is not given:
            payload = {**payload, "messages": found.messages} if api is None else \
                api.with_guarded_text(payload, found.messages)
            # what is logged with log.content: the masked text
            record.messages = payload.get("messages", payload.get("input"))
        masker, restorer = found.masker, found.restorer
    return payload, ChatGuard(rules_out, masker, restorer) if rules_out else None


def _filtered(record: RequestRecord, guard: ChatGuard, completion: dict[str, Any]) -> dict[str, Any]:
    """A JSON answer (or a cache hit) through the output rules, as one traced check."""
    guard.span = _check_span(record, tracing.GUARDRAILS_OUTPUT, guard.rules)
    completion = guard.answer(completion)
    _guarded(record, guard, "output")
    return completion


def _guarded(record: RequestRecord, guard: ChatGuard, stage: str) -> None:
    """What the output rules did, counted for the log line and the trace; their check's span ended."""
    for fired in guard.fired:
        record.guardrails += ((stage, fired.rule, fired.action),)
        tracing.guardrail(record.trace, stage, fired.rule, fired.action)
    tracing.end(guard.span, _checked(guard.fired, guard.blocked))
    guard.fired, guard.span = [], None


def _check_span(record: RequestRecord, name: str, rules: Sequence[Any]) -> Any:
    """A guardrail check as a step of the request's trace (None when tracing is off)."""
    if record.trace is None:
        return None
    return tracing.step(record.trace, name, {"gateway.guardrail.rules": [rule.name for rule in rules]})


def _checked(fired: Sequence[Any], blocked: str | None) -> dict[str, Any] | None:
    """A check's outcome on its span: the rules that fired and the one that blocked, never the text."""
    if not fired:
        return None
    out: dict[str, Any] = {"gateway.guardrail.fired": sorted({f.rule for f in fired})}
    if blocked is not None:
        out["gateway.guardrail.blocked"] = blocked
    return out


# A prompt version or metadata value longer than this is cut in the log line.
MAX_LABEL = 256


def _read_labels(record: RequestRecord, payload: dict[str, Any], headers: dict[str, str],
                 metadata_keys: list[str]) -> None:
    """What the log line says about the request besides what it did: the prompt's version (the
    `x-gateway-prompt-version` header, else `metadata.prompt_version`) and the metadata keys
    `log.metadata_keys` allows."""
    metadata = payload.get("metadata") if isinstance(payload.get("metadata"), dict) else {}
    version = headers.get("x-gateway-prompt-version") or metadata.get("prompt_version")
    if isinstance(version, str) and version:
        record.prompt_version = version[:MAX_LABEL]
    if metadata_keys and metadata:
        kept = {k: metadata[k] for k in metadata_keys if k in metadata}
        if kept:
            record.metadata = {k: v[:MAX_LABEL] if isinstance(v, str) else v for k, v in kept.items()}


def _answer_headers(route: Route, target: str, extra: dict[str, str]) -> dict[str, str]:
    return {"x-gateway-route": route.name, "x-gateway-target": target, **extra}


def _finisher(request: Request, record: RequestRecord, runtime: Runtime) -> Callable[[], None]:
    """The request's last step: the observer, told which runtime served it."""
    observer = request.app.state.observer

    def finish() -> None:
        if record.ended is None:
            record.ended = time.perf_counter()
        if record.admission is not None:
            usage = record.usage if isinstance(record.usage, dict) and record.cache[:3] != "hit" else {}
            prompt, completion, _ = token_counts(usage)
            used = prompt + completion
            spent = record.cost_usd + record.escalation_cost_usd
            for model, model_usage in record.cache_spend or ():
                priced = runtime.config.models.get(model)
                spent += cost_usd(priced, model_usage) if priced is not None else 0.0
            runtime.quota.settle(record.admission, used, spent)
        tracing.finish(record.trace, record)   # nothing when tracing is off
        observer.finish(record, runtime)

    return finish
