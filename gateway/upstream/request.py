"""A client's request on its way upstream, carried as one value through routing to every attempt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..record import RequestRecord


@dataclass(slots=True)   # not frozen: a frozen dataclass costs three times as much to make, per request
class UpstreamRequest:
    payload: dict[str, Any]      # the client's body as parsed; never changed (each call builds its own)
    path: str                    # the provider path: "/chat/completions" | "/embeddings"
    stream: bool                 # the upstream is asked to stream
    headers: dict[str, str]      # request id, trace headers, the client's Authorization when passed through
    record: RequestRecord        # what the attempts tell the observer
    # A stream whose client did not ask for the usage chunk: ask for it anyway, to count the
    # tokens (the passthrough keeps it from the client).
    ask_usage: bool = False

    def body(self, upstream_model: str, stream_usage: bool = True) -> bytes:
        """The JSON sent to a target: the client's body with the target's own model name.
        `stream_usage` false (the provider's setting): no stream_options at all."""
        if not stream_usage and "stream_options" in self.payload:
            body = {k: v for k, v in self.payload.items() if k != "stream_options"}
            body["model"] = upstream_model
            return orjson.dumps(body)
        if self.ask_usage and stream_usage:
            options = {**(self.payload.get("stream_options") or {}), "include_usage": True}
            return orjson.dumps({**self.payload, "model": upstream_model, "stream_options": options})
        return orjson.dumps({**self.payload, "model": upstream_model})
