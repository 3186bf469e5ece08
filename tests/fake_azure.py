"""A fake Azure OpenAI for tests, written from Azure's data-plane REST reference and strict the way
the service is.

Paths: the classic deployment URLs, `POST /openai/deployments/{deployment}/chat/completions` and
`/embeddings`, which require a known `api-version` query parameter (missing: 404 "Resource not
found"; unknown: 400 "API version not supported"), and the v1 API, `POST /openai/v1/chat/completions`
and `/openai/v1/embeddings`, which takes the deployment as the body's `model` and no dated
api-version. Auth: the `api-key` header, or `Authorization: Bearer` with a Microsoft Entra ID token
(on v1 the API key is taken as a bearer token too); otherwise 401 in Azure's own shape
(`{"error": {"code": "401", "message"}}`; for a bad Entra ID token, API management's
`{"statusCode": 401, "message"}`). A deployment that does not exist is 404
`DeploymentNotFound`; a chat call to an embeddings deployment (or the reverse) 400
`OperationNotSupported`.

Requests are checked as Azure's models check them, with OpenAI-shaped 400s: unknown fields
("Unrecognized request argument supplied"), `stream_options` on an api-version before 2024-09-01
or without `stream`, missing or empty `messages`, unknown roles and content part types, a tool
message that answers no tool call, tool calls left unanswered, malformed tools, `n` out of range.

Answers carry Azure's annotations: `prompt_filter_results`, per choice `content_filter_results`,
`model` the deployment's model (not the deployment's name), usage with `prompt_tokens_details`
(`cached_tokens` from a knob). Streams are Azure's: a first chunk with no choices and the prompt's
filter results (empty id, model and object), a role chunk, content (or tool-call argument) chunks
paced by a knob, a finish chunk, the usage chunk when `stream_options.include_usage` asks, `[DONE]`.
Tool calls and JSON answers are shaped as tests/fake_upstream.py shapes them (its helpers are used).

Knobs (`FakeAzure.knobs`): latency, chunk pacing, an error status N times (429 with Azure's rate
limit message and Retry-After; 500 from the model, 503 and 504 from Azure's front, 502 an HTML
page), the content filter refusing the prompt (400 `content_filter` with
`innererror.content_filter_result`) or cutting the answer (`finish_reason: content_filter`), a
stream broken after N chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from aiohttp import web

from .fake_server import Served
from .fake_upstream import (InvalidRequest, answer_text, argument_fragments, choice_count, fake_embedding,
                            function_to_call, placeholder, top_logprobs)

API_KEY = "azure-key-0123456789abcdef"
ENTRA_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2NvZ25pdGl2ZXNlcnZpY2VzLmF6dXJlLmNvbSJ9.sig"

GA_VERSIONS = ("2022-12-01", "2023-05-15", "2024-02-01", "2024-06-01", "2024-10-21")
PREVIEW_VERSIONS = tuple(f"{d}-preview" for d in (
    "2023-06-01", "2023-07-01", "2023-08-01", "2023-09-01", "2023-12-01", "2024-02-15", "2024-03-01", "2024-04-01",
    "2024-05-01", "2024-07-01", "2024-08-01", "2024-09-01", "2024-10-01", "2024-12-01", "2025-01-01", "2025-02-01",
    "2025-03-01", "2025-04-01"))
VERSIONS = frozenset(GA_VERSIONS + PREVIEW_VERSIONS)
STREAM_OPTIONS_SINCE = "2024-09-01"   # api-versions before this refuse stream_options

CHAT_FIELDS = frozenset({
    "messages", "model", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens",
    "max_completion_tokens", "n", "presence_penalty", "response_format", "seed", "stop", "stream", "stream_options",
    "temperature", "top_p", "tools", "tool_choice", "parallel_tool_calls", "user", "function_call", "functions",
    "data_sources", "reasoning_effort", "store", "metadata", "prediction", "modalities", "audio",
    "user_security_context", "prompt_cache_key", "safety_identifier", "service_tier", "verbosity"})
EMBEDDING_FIELDS = frozenset({"input", "model", "user", "encoding_format", "dimensions", "input_type"})
ROLES = ("system", "assistant", "user", "function", "tool", "developer")
PART_TYPES = {"user": ("text", "image_url"), "assistant": ("text", "refusal")}   # other roles: text only

SAFE = {"filtered": False, "severity": "safe"}
PROMPT_FILTER = {"hate": SAFE, "jailbreak": {"filtered": False, "detected": False}, "self_harm": SAFE,
                 "sexual": SAFE, "violence": SAFE}
CHOICE_FILTER = {"hate": SAFE, "protected_material_code": {"filtered": False, "detected": False},
                 "protected_material_text": {"filtered": False, "detected": False}, "self_harm": SAFE,
                 "sexual": SAFE, "violence": SAFE}
FILTERED = {**CHOICE_FILTER, "violence": {"filtered": True, "severity": "medium"}}
FILTER_MESSAGE = ("The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
                  "Please modify your prompt and retry. To learn more about our content filtering policies please "
                  "read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766")
NOT_FOUND = "The API deployment for this resource does not exist. If you created the deployment within the last " \
            "5 minutes, please wait a moment and try again."


@dataclass
class Knobs:
    latency_s: float = 0.0            # before the answer
    chunk_delay_s: float = 0.0        # between a stream's content chunks
    error_status: int = 0             # answer with this status (429, 500, 502, 503, 504)...
    error_times: int = -1             # ...for the next N requests (-1: always)
    retry_after: str | None = None    # Retry-After on those errors
    filter_prompt: bool = False       # the content filter refuses the prompt: 400 content_filter
    filter_completion: bool = False   # it cuts the answer: finish_reason content_filter
    broken_after: int = -1            # streams: drop the connection after N content chunks
    reply: str | None = None          # the answer's text (default: the last user message, echoed)
    cached_tokens: int = 0            # prompt tokens reported as served from the prompt cache


@dataclass(frozen=True)
class Deployment:
    model: str                        # what Azure reports as the answer's `model`
    kind: str = "chat"                # chat | embeddings


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    body: dict[str, Any]
    headers: dict[str, str]           # names lower-cased


class Refused(Exception):
    """A request Azure refuses: its status and Azure's body for it."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(body)
        self.status = status
        self.body = body
        self.headers = headers


class BadGateway(Refused):
    """The front door's own 502: an HTML page, not JSON."""

    PAGE = "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"

    def __init__(self, headers: dict[str, str] | None = None):
        super().__init__(502, {}, headers)


def azure_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Refused:
    """Azure's own error shape (its front door, not the model): code and message, no type."""
    return Refused(status, {"error": {"code": code, "message": message}}, headers)


def invalid(message: str, param: str | None = None, code: str | None = None) -> Refused:
    """The model's 400, in OpenAI's shape (Azure passes it on as the model wrote it)."""
    return Refused(400, {"error": {"message": message, "type": "invalid_request_error", "param": param,
                                   "code": code}})


@dataclass
class FakeAzure(Served):
    host: str = "127.0.0.1"
    port: int = 0
    name: str = "azure"
    api_key: str = API_KEY
    tokens: frozenset[str] = frozenset({ENTRA_TOKEN})   # Entra ID tokens it accepts
    deployments: dict[str, Deployment] = field(default_factory=lambda: {
        "gpt-4o-prod": Deployment("gpt-4o-2024-11-20"),
        "gpt-4o-mini-eu": Deployment("gpt-4o-mini-2024-07-18"),
        "embed-small": Deployment("text-embedding-3-small", "embeddings"),
    })
    knobs: Knobs = field(default_factory=Knobs)

    def __post_init__(self) -> None:
        self.seen: list[Seen] = []
        self._ids = itertools.count(1)
        self._call_ids = itertools.count(1)

    # ---- control -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The resource's endpoint, as Azure's portal gives it (https://NAME.openai.azure.com)."""
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        self.knobs = Knobs()
        self.seen.clear()

    def set(self, **knobs: Any) -> None:
        self.knobs = replace(self.knobs, **knobs)

    # ---- the server ----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self.classic_chat)
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self.classic_embeddings)
        app.router.add_post("/openai/v1/chat/completions", self.v1_chat)
        app.router.add_post("/openai/v1/embeddings", self.v1_embeddings)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

    async def classic_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "chat", request.match_info["deployment"])

    async def classic_embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "embeddings", request.match_info["deployment"])

    async def v1_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "chat", None)

    async def v1_embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "embeddings", None)

    async def not_found(self, request: web.Request) -> web.Response:
        return reply(azure_error(404, "404", "Resource not found"))

    async def _serve(self, request: web.Request, operation: str, deployment: str | None) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self.seen.append(Seen(request.path, dict(request.query), body if isinstance(body, dict) else {},
                              {k.lower(): v for k, v in request.headers.items()}))
        try:
            version = self._version(request, classic=deployment is not None)
            self._authenticate(request, classic=deployment is not None)
            if not isinstance(body, dict):
                raise invalid("We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                              "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
                              "sent was not valid JSON.)")
            found = self._deployment(deployment if deployment is not None else body.get("model"), operation)
            knobs = self.knobs
            self._fault(knobs, version)
            if knobs.latency_s:
                await asyncio.sleep(knobs.latency_s)
            if operation == "embeddings":
                return embeddings(body, found)
            check_chat(body, version)
            if knobs.filter_prompt:
                raise Refused(400, content_filter_error())
            return await self._chat(request, body, found, knobs)
        except Refused as refused:
            return reply(refused)
        except InvalidRequest as exc:
            return reply(invalid(str(exc), exc.param))

    def _version(self, request: web.Request, classic: bool) -> str | None:
        """The api-version asked for (None on v1, which takes no dated one)."""
        version = request.query.get("api-version")
        if classic and version is None:
            raise azure_error(404, "404", "Resource not found")
        if classic and version not in VERSIONS or not classic and version not in (None, "preview", "latest"):
            raise azure_error(400, "BadRequest", "API version not supported")
        return version if classic else None

    def _authenticate(self, request: web.Request, classic: bool) -> None:
        key = request.headers.get("api-key")
        if key is not None:
            if key != self.api_key:
                raise azure_error(401, "401", "Access denied due to invalid subscription key or wrong API endpoint. "
                                  "Make sure to provide a valid key for an active subscription and use a correct "
                                  "regional API endpoint for your resource.")
            return
        authorization = request.headers.get("authorization", "")
        if not authorization:
            raise azure_error(401, "401", "Access denied due to missing subscription key. Make sure to include "
                              "subscription key when making requests to an API.")
        token = authorization[7:] if authorization[:7].lower() == "bearer " else None
        if token not in self.tokens and (classic or token != self.api_key):
            # Entra ID's refusal comes from Azure's API management, in a shape of its own.
            raise Refused(401, {"statusCode": 401, "message": "Unauthorized. Access token is missing, invalid, "
                                "audience is incorrect (https://cognitiveservices.azure.com), or have expired."})

    def _deployment(self, name: Any, operation: str) -> Deployment:
        if name is None:
            raise invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
        found = self.deployments.get(name) if isinstance(name, str) else None
        if found is None:
            raise azure_error(404, "DeploymentNotFound", NOT_FOUND)
        if found.kind != operation:
            verb = "chatCompletion" if operation == "chat" else "embeddings"
            raise azure_error(400, "OperationNotSupported", f"The {verb} operation does not work with the specified "
                              f"model, {found.model}. Please choose different model and try again. You can learn more "
                              "about which models can be used with each operation here: "
                              "https://go.microsoft.com/fwlink/?linkid=2197993.")
        return found

    def _fault(self, knobs: Knobs, version: str | None) -> None:
        if not knobs.error_status or knobs.error_times == 0:
            return
        if knobs.error_times > 0:
            self.knobs.error_times -= 1
        status = knobs.error_status
        headers = {"retry-after": knobs.retry_after, "retry-after-ms": str(int(float(knobs.retry_after) * 1000))} \
            if knobs.retry_after else None
        if status == 429:
            raise azure_error(429, "429", "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
                              f"version {version or 'v1'} have exceeded token rate limit of your current OpenAI S0 "
                              f"pricing tier. Please retry after {knobs.retry_after or 1} second. Please go here: "
                              "https://aka.ms/oai/quotaincrease if you would like to further increase the default "
                              "rate limit.", headers)
        if status == 500:
            raise Refused(500, {"error": {"message": "The server had an error while processing your request. Sorry "
                                          "about that!", "type": "server_error", "param": None, "code": None}}, headers)
        if status == 502:
            raise BadGateway(headers)
        raise azure_error(status, "ServiceUnavailable" if status == 503 else "InternalServerError",
                          "The service is temporarily unable to process your request. Please try again later.", headers)

    # ---- chat answers --------------------------------------------------------------------

    async def _chat(self, request: web.Request, body: dict[str, Any], deployment: Deployment,
                    knobs: Knobs) -> web.StreamResponse:
        n = choice_count(body)
        call = function_to_call(body)
        text = answer_text(body) if knobs.reply is None else knobs.reply
        answer = Answer(self, body, deployment, knobs, n, call, text)
        if body.get("stream"):
            return await answer.stream(request)
        return web.Response(body=orjson.dumps(answer.completion()), content_type="application/json")

    def next_id(self) -> str:
        return f"chatcmpl-AZ{self.name}{next(self._ids):08d}"

    def next_call_id(self) -> str:
        return f"call_{self.name}{next(self._call_ids):012d}"


class Answer:
    """One chat answer, as JSON or as Azure's stream."""

    def __init__(self, fake: FakeAzure, body: dict[str, Any], deployment: Deployment, knobs: Knobs, n: int,
                 call: dict[str, Any] | None, text: str):
        self.body, self.knobs, self.n, self.call = body, knobs, n, call
        self.head = {"created": int(time.time()), "id": fake.next_id(), "model": deployment.model,
                     "system_fingerprint": "fp_azure01"}
        self.call_ids = [fake.next_call_id() for _ in range(n)] if call is not None else []
        if call is not None:
            self.arguments = orjson.dumps(placeholder(call.get("parameters") or {"type": "object"})).decode()
            self.pieces = argument_fragments(self.arguments)
            self.finish = "tool_calls"
            self.spoken = " ".join([str(call.get("name")), *self.pieces])
        else:
            words = text.split(" ")
            if knobs.filter_completion:
                words = words[: max(1, len(words) // 2)]   # what was generated before the filter cut it
            self.pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
            self.finish = "content_filter" if knobs.filter_completion else "stop"
            self.spoken = "".join(self.pieces)
        self.filter_results = FILTERED if knobs.filter_completion else CHOICE_FILTER

    def usage(self) -> dict[str, Any]:
        prompt = sum(len(str(m.get("content") or "").split()) + 3 for m in self.body["messages"])
        completion = len(self.spoken.split()) * self.n
        return {"completion_tokens": completion,
                "completion_tokens_details": {"accepted_prediction_tokens": 0, "audio_tokens": 0, "reasoning_tokens": 0,
                                              "rejected_prediction_tokens": 0},
                "prompt_tokens": prompt,
                "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": min(self.knobs.cached_tokens, prompt)},
                "total_tokens": prompt + completion}

    def logprobs(self, piece: str) -> dict[str, Any] | None:
        if not self.body.get("logprobs") or self.call is not None:
            return None
        top = self.body.get("top_logprobs") or 0
        return {"content": [{"token": w, "logprob": -0.01, "bytes": list(w.encode()),
                             "top_logprobs": top_logprobs(w, -0.01, top)} for w in piece.split()], "refusal": None}

    def completion(self) -> dict[str, Any]:
        if self.call is not None:
            messages = [{"annotations": [], "content": None, "refusal": None, "role": "assistant", "tool_calls": [
                {"id": self.call_ids[i], "type": "function",
                 "function": {"name": self.call.get("name"), "arguments": self.arguments}}]} for i in range(self.n)]
        elif self.knobs.filter_completion:
            messages = [{"role": "assistant"}] * self.n   # a filtered answer comes back without its content
        else:
            messages = [{"annotations": [], "content": self.spoken, "refusal": None, "role": "assistant"}] * self.n
        return {
            "choices": [{"content_filter_results": self.filter_results, "finish_reason": self.finish, "index": i,
                         "logprobs": self.logprobs(self.spoken), "message": messages[i]} for i in range(self.n)],
            **self.head, "object": "chat.completion",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": PROMPT_FILTER}],
            "usage": self.usage(),
        }

    def chunk(self, index: int, delta: dict[str, Any], finish: str | None = None, filters: Any = None,
              logprobs: Any = None) -> bytes:
        chunk: dict[str, Any] = {"choices": [{"content_filter_results": filters or {}, "delta": delta,
                                              "finish_reason": finish, "index": index, "logprobs": logprobs}],
                                 **self.head, "object": "chat.completion.chunk"}
        if self.include_usage:
            chunk["usage"] = None
        return sse(chunk)

    @property
    def include_usage(self) -> bool:
        return bool((self.body.get("stream_options") or {}).get("include_usage"))

    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        # Azure's first event: no choices, no id or model, only the prompt's filter results.
        await resp.write(sse({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                              "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": PROMPT_FILTER}]}))
        with contextlib.suppress(ConnectionError):
            for c in range(self.n):
                await resp.write(self.chunk(c, self.first_delta(c)))
            for i, piece in enumerate(self.pieces):
                if self.knobs.broken_after == i:
                    request.transport.close()
                    return resp
                if self.knobs.chunk_delay_s:
                    await asyncio.sleep(self.knobs.chunk_delay_s)
                for c in range(self.n):
                    await resp.write(self.chunk(c, *self.piece_delta(piece)))
            for c in range(self.n):
                await resp.write(self.chunk(c, {}, self.finish, FILTERED if self.knobs.filter_completion else None))
            if self.include_usage:
                await resp.write(sse({"choices": [], **self.head, "object": "chat.completion.chunk",
                                      "usage": self.usage()}))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        return resp

    def first_delta(self, index: int) -> dict[str, Any]:
        if self.call is None:
            return {"content": "", "refusal": None, "role": "assistant"}
        return {"content": None, "refusal": None, "role": "assistant", "tool_calls": [
            {"index": 0, "id": self.call_ids[index], "type": "function",
             "function": {"name": self.call.get("name"), "arguments": ""}}]}

    def piece_delta(self, piece: str) -> tuple[dict[str, Any], None, dict[str, Any] | None, Any]:
        if self.call is not None:
            return {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, None, None, None
        return {"content": piece}, None, CHOICE_FILTER, self.logprobs(piece)


def sse(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


def reply(refused: Refused) -> web.Response:
    if isinstance(refused, BadGateway):
        return web.Response(text=BadGateway.PAGE, status=502, headers=refused.headers, content_type="text/html")
    return web.Response(body=orjson.dumps(refused.body), status=refused.status, headers=refused.headers,
                        content_type="application/json")


def content_filter_error() -> dict[str, Any]:
    """Azure's 400 for a prompt its content filter refused."""
    flagged = {**PROMPT_FILTER, "violence": {"filtered": True, "severity": "high"}}
    return {"error": {"message": FILTER_MESSAGE, "type": None, "param": "prompt", "code": "content_filter",
                      "status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation",
                                                    "content_filter_result": flagged}}}


# ---- request checks (the model's, passed on by Azure) ---------------------------------------

def check_chat(body: dict[str, Any], version: str | None) -> None:
    for name in body:
        if name not in CHAT_FIELDS or name == "stream_options" and version is not None and \
                version < STREAM_OPTIONS_SINCE:
            raise invalid(f"Unrecognized request argument supplied: {name}. Please contact us through an Azure "
                          "support request at: https://go.microsoft.com/fwlink/?linkid=2213926 for further questions.")
    if "stream_options" in body and body.get("stream") is not True:
        raise invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options",
                      "invalid_value")
    messages = body.get("messages")
    if messages is None:
        raise invalid("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise invalid("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty "
                      "array instead.", "messages", "empty_array")
    check_messages(messages)
    check_tools(body.get("tools"))
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (type(value) is not int or value < 1):
            raise invalid(f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got {value} "
                          "instead.", name, "integer_below_min_value")


def check_messages(messages: list[Any]) -> None:
    pending: list[str] = []   # tool calls of the last assistant message that no tool message answered yet
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(f"Invalid type for '{where}': expected an object, but got {type(message).__name__} instead.",
                          where, "invalid_type")
        role = message.get("role")
        if role not in ROLES:
            raise invalid(f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', "
                          "'tool', and 'developer'.", f"{where}.role", "invalid_value")
        if pending and role != "tool":
            raise unanswered(pending, i - 1)
        if role == "tool":
            if message.get("tool_call_id") not in pending:
                raise invalid("Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                              "with 'tool_calls'.", f"messages.[{i}].role")
            pending.remove(message["tool_call_id"])
        if role == "assistant":
            pending = [c.get("id") for c in message.get("tool_calls") or () if isinstance(c, dict)]
        elif "content" not in message:
            raise invalid(f"Missing required parameter: '{where}.content'.", f"{where}.content",
                          "missing_required_parameter")
        check_content(message.get("content"), role, where)
    if pending:
        raise unanswered(pending, len(messages) - 1)


def unanswered(ids: list[str], index: int) -> Refused:
    return invalid("An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                   f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(ids)}",
                   f"messages.[{index}].role")


def check_content(content: Any, role: str, where: str) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid(f"Invalid type for '{where}.content': expected one of a string or array of objects, but got "
                      f"{type(content).__name__} instead.", f"{where}.content", "invalid_type")
    allowed = PART_TYPES.get(role, ("text",))
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            names = " and ".join(f"'{t}'" for t in allowed)
            raise invalid(f"Invalid value: '{kind}'. Supported values are: {names}.", f"{where}.content[{j}].type",
                          "invalid_value")
        if kind == "image_url":
            url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) else None
            if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:image/")):
                raise invalid("Invalid image URL: expected an http(s) URL or a base64 data URL of an image.",
                              f"{where}.content[{j}].image_url.url", "invalid_value")


def check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise invalid("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise invalid(f"Invalid value: '{tool.get('type') if isinstance(tool, dict) else tool}'. Supported values "
                          "are: 'function'.", f"tools[{i}].type", "invalid_value")
        if not isinstance((tool.get("function") or {}).get("name"), str):
            raise invalid(f"Missing required parameter: 'tools[{i}].function.name'.", f"tools[{i}].function.name",
                          "missing_required_parameter")


# ---- embeddings ------------------------------------------------------------------------------

def embeddings(body: dict[str, Any], deployment: Deployment) -> web.Response:
    for name in body:
        if name not in EMBEDDING_FIELDS:
            raise invalid(f"Unrecognized request argument supplied: {name}")
    given = body.get("input")
    if given is None:
        raise invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    inputs = [given] if isinstance(given, str) else given
    if not isinstance(inputs, list) or not inputs or not all(isinstance(x, (str, int, list)) for x in inputs):
        raise invalid("'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/"
                      "api-reference.", "input")
    dims = body.get("dimensions") or 32
    data = [{"embedding": fake_embedding(str(x), dims), "index": i, "object": "embedding"}
            for i, x in enumerate(inputs)]
    tokens = sum(len(str(x).split()) for x in inputs)
    out = {"data": data, "model": deployment.model, "object": "list",
           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return web.Response(body=orjson.dumps(out), content_type="application/json")
