"""Inbound APIs: the request shapes clients send, read and validated before anything else runs.

openai.py    chat completions and embeddings bodies (OpenAI's shape, also the gateway's internal
             chat form), and the plain text of a message
messages.py  Anthropic's Messages API: to the chat form and back, its stream's events
body.py      the HTTP body (bounded by `server.max_body_bytes`) and the request's headers

An inbound API other than chat completions is one module with the functions of `InboundApi`: a
provider that speaks it natively gets the request as it came (`Adapter.native`), any other the
request in the chat form, its answer, stream and errors written back in the API's own shapes.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterable, Protocol


class InboundApi(Protocol):
    ENDPOINT: str        # the metrics' and log's `endpoint`, and the adapters' name for it
    DONE_MARK: bytes     # what only a complete stream of this API holds

    def check(self, payload: dict[str, Any]) -> None: ...

    def to_chat(self, payload: dict[str, Any], provider_type: str) -> dict[str, Any]: ...

    def completion(self, answer: dict[str, Any], model: str) -> dict[str, Any]: ...

    def render(self, completion: dict[str, Any]) -> bytes: ...

    def render_stream(self, chat_sse: AsyncIterator[bytes]) -> AsyncIterator[bytes]: ...

    def replay(self, chat_sse: Iterable[bytes]) -> list[bytes]: ...

    def chat_chunks(self, kept: Iterable[bytes], model: str) -> list[bytes]: ...

    def error_body(self, status: int, openai_body: bytes) -> bytes: ...

    def stream_error_event(self, message: str) -> bytes: ...
