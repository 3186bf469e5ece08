"""A client's request on its way upstream, carried as one value through routing to every attempt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..record import RequestRecord


@dataclass(slots=True)   # not frozen: a frozen dataclass costs three times as much to make, per request
class UpstreamRequest:
    payload: dict[str, Any]      # the client's body as parsed; never changed (each call builds its own)
    path: str                    # the gateway's endpoint: "/chat/completions" | "/embeddings"
    stream: bool                 # the upstream is asked to stream
    headers: dict[str, str]      # request id, trace headers, the client's Authorization when passed through
    record: RequestRecord        # what the attempts tell the observer
    # A stream whose client did not ask for the usage chunk: ask for it anyway, to count the
    # tokens (the passthrough keeps it from the client).
    ask_usage: bool = False
    # Fields the gateway added on its own (a cascade's logprobs): a provider that cannot take one
    # leaves it out, where one the client sent would be refused.
    optional: frozenset[str] = frozenset()
    # The inbound API when not chat completions or embeddings (gateway/inbound/: Anthropic's
    # Messages, say): the payload is in its shape, and so must the answer be.
    api: Any = None
    # The output guardrails of an inbound API's request (gateway/guardrails/chat.py): its stream is
    # filtered in the chat form, before it is written in the API's shape (so it never goes native).
    guard: Any = None

    def render(self, completion: dict[str, Any]) -> bytes:
        """A chat completion as the client's answer body."""
        return orjson.dumps(completion) if self.api is None else self.api.render(completion, self.payload)
