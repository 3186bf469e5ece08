"""A provider's API, as the gateway sees it: how a request in OpenAI's shape goes out, and how the
answer, its stream and its errors come back in OpenAI's shapes.

One adapter a provider `type` (gateway/providers/<type>.py). The pipeline, the cache and routing
never see anything but OpenAI's chat completions: an adapter turns the gateway's request into the
provider's (`request`), the provider's JSON answer into a `chat.completion` (`answer`), its stream
into OpenAI's `chat.completion.chunk` SSE events ending in `[DONE]` (`stream`), and its error
answers into OpenAI-shaped ones with the status OpenAI would give (`error`).

This module's `Adapter` is the `openai` type: any server that speaks OpenAI's API. Its requests go
out as the client sent them (with the target's model name), and its answers, streams and errors
come back untouched: `translates` is false, and nothing is parsed that is only forwarded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping

import aiohttp
import orjson
from yarl import URL

from ..config import ModelConfig, ProviderConfig
from ..errors import GatewayError, error_body

CHAT = "/chat/completions"
EMBEDDINGS = "/embeddings"


@dataclass(slots=True)
class Outgoing:
    """One request to the provider, ready to send."""

    url: str | URL     # a yarl.URL when the path is encoded already (bedrock's model ids), sent as it is
    body: bytes
    headers: dict[str, str]


@dataclass(slots=True)
class Call:
    """What an adapter needs to build one request: which endpoint, the client's body (never
    changed: each call builds its own), the target's model, and the request's own headers
    (request id, trace headers, the client's Authorization when passed through)."""

    path: str                    # CHAT | EMBEDDINGS
    payload: dict[str, Any]
    model: str                   # the name the provider knows the target's model by
    pricing: ModelConfig         # the target's model entry (its max_tokens, say)
    stream: bool
    headers: dict[str, str]
    # A stream whose client did not ask for the usage chunk: ask for it anyway, to count the tokens
    # (the passthrough keeps it from the client). Translating adapters always send one.
    ask_usage: bool = False
    optional: frozenset[str] = frozenset()   # fields the gateway added, which may be left out


class StreamFailed(Exception):
    """The provider's stream ended in an error of its own (an `error` event): the client's stream
    ends with the gateway's SSE error event, and the target counts as failed."""


class Adapter:
    """The `openai` type: OpenAI's API, passed through."""

    type = "openai"
    translates = False
    endpoints: frozenset[str] = frozenset({CHAT, EMBEDDINGS})

    def __init__(self, config: ProviderConfig):
        self.config = config
        self.headers = {"content-type": "application/json", **self.auth_headers(), **config.headers}

    # Inbound APIs besides chat completions that this provider speaks itself (gateway/inbound/):
    # their requests go to it as they came, and its answers back untouched.
    native: frozenset[str] = frozenset()

    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}

    def native_request(self, endpoint: str, call: Call) -> Outgoing:
        """A request of an inbound API in `native`, as the client sent it, with the target's model."""
        raise NotImplementedError(endpoint)

    def check(self, path: str) -> None:
        if path not in self.endpoints:
            served = "chat completions" if path == EMBEDDINGS else "this endpoint"
            raise GatewayError(400, f"This model's provider (type {self.type}) serves only {served}.",
                               "invalid_request_error", "unsupported_endpoint", "model")

    def request(self, call: Call) -> Outgoing:
        self.check(call.path)
        return Outgoing(self.config.base_url + call.path, self.body(call), {**call.headers, **self.headers})

    def body(self, call: Call) -> bytes:
        """The client's body with the target's model name. A provider with `stream_usage: false`
        gets no stream_options at all (the client's neither)."""
        payload = call.payload
        if not self.config.stream_usage and "stream_options" in payload:
            body = {k: v for k, v in payload.items() if k != "stream_options"}
            body["model"] = call.model
            return orjson.dumps(body)
        if call.ask_usage and self.config.stream_usage:
            options = {**(payload.get("stream_options") or {}), "include_usage": True}
            return orjson.dumps({**payload, "model": call.model, "stream_options": options})
        return orjson.dumps({**payload, "model": call.model})

    def is_stream(self, content_type: str) -> bool:
        """Whether an answer to a stream request is the stream (else a JSON body, or an error)."""
        return content_type.startswith("text/event-stream")

    def answer(self, path: str, data: dict[str, Any], call_model: str) -> dict[str, Any]:
        """The provider's JSON answer (status 200) in OpenAI's shape. Raise ValueError when it is
        not the answer the API promises: the target then failed with `invalid`."""
        return data

    def stream(self, response: aiohttp.ClientResponse, call_model: str) -> AsyncIterator[bytes]:
        """The provider's stream as OpenAI SSE bytes, ending with `data: [DONE]` when it completed;
        raise StreamFailed for an error the provider sent in it."""
        return response.content.iter_any()

    def error(self, status: int, raw: bytes, content_type: str, headers: Mapping[str, str]) -> tuple[int, bytes, str]:
        """An error answer (status >= 400) as OpenAI's: status, body, content type."""
        return status, raw, content_type

    def retry_after(self, status: int, raw: bytes, headers: Mapping[str, str]) -> str | None:
        """How long the provider asks to wait before a retry (a Retry-After value), if it says."""
        return headers.get("retry-after")


def openai_error(status: int, message: str, type: str, code: str | None = None,
                 param: str | None = None) -> tuple[int, bytes, str]:
    """An error answer the translating adapters give for a provider's error."""
    return status, error_body(message, type, code, param), "application/json"


class OpenAIAdapter(Adapter):
    """The `openai` type as a provider: OpenAI's chat completions and embeddings passed through,
    and its Responses API and legacy completions (`/v1/responses`, `/v1/completions`) natively."""

    native = frozenset({"responses", "completions"})

    def native_request(self, endpoint: str, call: Call) -> Outgoing:
        return Outgoing(f"{self.config.base_url}/{endpoint}", orjson.dumps({**call.payload, "model": call.model}),
                        {**call.headers, **self.headers})
