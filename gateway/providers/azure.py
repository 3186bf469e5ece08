"""The `azure` type: Azure OpenAI, whose requests and answers are OpenAI's own.

Where a request goes: with `api_version` set, the classic deployment URLs,
`{base_url}/openai/deployments/{deployment}/chat/completions?api-version={api_version}` (and
`/embeddings`), the model's `name` being the deployment's; without one, Azure's v1 API,
`{base_url}/openai/v1/chat/completions` with the deployment's name as the body's `model`. The body
is the client's, with `model` set to the deployment either way (a classic URL ignores it).

Auth: the provider's `api_key` in Azure's `api-key` header, or as `Authorization: Bearer` with
`auth: bearer` (a Microsoft Entra ID token). Without a key of its own (open mode), the client's
bearer token is sent the same way, so that `auth` says how Azure reads whichever key is used.

Answers and streams are OpenAI's and pass through untouched (`translates` is false), Azure's
extras with them: `prompt_filter_results`, each choice's `content_filter_results`, the stream's
first chunk (no choices, only the prompt's filter results), `finish_reason: content_filter`.
Errors that are already OpenAI's (a `type` beside the message: Azure's content filter's 400,
`code: content_filter`, keeps its `innererror`) pass through; Azure's own shapes (`{"error":
{"code", "message"}}` with no type, `{"statusCode", "message"}`, a proxy's HTML page) are put in
OpenAI's shape with the status kept.
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import quote

import orjson

from ..auth import bearer_token
from ..config import ProviderConfig
from .base import Adapter, Call, Outgoing, openai_error

# OpenAI's error type for a status, for Azure errors that carry none.
TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
         422: "invalid_request_error", 429: "rate_limit_error"}
# Azure often puts the status itself in `code` ("401", "429"): OpenAI's word for it says more.
CODES = {"401": "invalid_api_key", "404": "not_found", "429": "rate_limit_exceeded"}


class AzureAdapter(Adapter):
    type = "azure"

    def __init__(self, config: ProviderConfig):
        super().__init__(config)
        # A base URL pasted with the API's path on it (`.../openai/v1`, as Azure's v1 docs write
        # it) names the same resource.
        root = config.base_url.removesuffix("/openai/v1").removesuffix("/openai")
        version = config.api_version
        self.prefix = root + ("/openai/v1" if version is None else "/openai/deployments/")
        # The Responses API: the deployment in the body's `model`, on classic URLs as on v1.
        self.responses_url = root + "/openai/v1/responses" if version is None else \
            root + "/openai/responses?api-version=" + quote(version, safe="")
        self.query = "" if version is None else "?api-version=" + quote(version, safe="")

    def auth_headers(self) -> dict[str, str]:
        key = self.config.api_key
        if key is None:
            return {}
        return {"authorization": f"Bearer {key}"} if self.config.auth == "bearer" else {"api-key": key}

    native = frozenset({"responses", "completions"})

    def request(self, call: Call) -> Outgoing:
        self.check(call.path)
        return Outgoing(self.url(call), self.body(call), self.request_headers(call.headers))

    def native_request(self, endpoint: str, call: Call) -> Outgoing:
        body = orjson.dumps({**call.payload, "model": call.model})
        if endpoint == "completions":   # a deployment's, like chat completions
            return Outgoing(self.url(Call("/completions", call.payload, call.model, call.pricing, call.stream,
                                          call.headers)), body, self.request_headers(call.headers))
        return Outgoing(self.responses_url, body, self.request_headers(call.headers))

    def url(self, call: Call) -> str:
        if self.config.api_version is None:
            return self.prefix + call.path
        return self.prefix + quote(call.model, safe="") + call.path + self.query

    def request_headers(self, given: dict[str, str]) -> dict[str, str]:
        client_auth = given.get("authorization")
        if client_auth is None:
            return {**given, **self.headers}
        headers = {k: v for k, v in given.items() if k != "authorization"}
        # The client's token is sent only when the provider has no key of its own (else the
        # provider's key is what Azure gets, as with the openai type), in the header `auth` names.
        if self.config.api_key is None:
            token = bearer_token(client_auth)
            if self.config.auth == "bearer":
                headers["authorization"] = client_auth
            elif token is not None:
                headers["api-key"] = token
        return {**headers, **self.headers}

    def error(self, status: int, raw: bytes, content_type: str, headers: Mapping[str, str]) -> tuple[int, bytes, str]:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            if isinstance(error.get("type"), str) and error["type"]:
                return status, raw, "application/json"   # OpenAI's shape already
            return status, orjson.dumps({"error": openai_shaped(status, error)}), "application/json"
        message = data.get("message") if isinstance(data, dict) else None
        if not isinstance(message, str):
            message = raw[:500].decode("utf-8", "replace").strip() or f"HTTP {status}"
        return openai_error(status, f"Azure OpenAI answered {status}: {message}", error_type(status))


def openai_shaped(status: int, error: dict[str, Any]) -> dict[str, Any]:
    """Azure's `{"code", "message", ...}` with OpenAI's type, param and code beside what Azure sent
    (its innererror, say)."""
    code = error.get("code")
    if code is not None:
        code = CODES.get(str(code), str(code))
    return {**error, "type": error_type(status), "param": error.get("param"), "code": code}


def error_type(status: int) -> str:
    return TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
