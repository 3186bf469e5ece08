"""Inbound APIs: the request shapes clients send, read and validated before anything else runs.

openai.py    chat completions and embeddings bodies (OpenAI's shape, also the gateway's internal
             chat form), and the plain text of a message
messages.py  Anthropic's Messages API: to the chat form and back, its stream's events
responses.py OpenAI's Responses API, likewise
body.py      the HTTP body (bounded by `server.max_body_bytes`) and the request's headers

An inbound API other than chat completions is one module with the functions of `InboundApi`: a
provider that speaks it natively gets the request as it came (`Adapter.native`), any other the
request in the chat form, its answer, stream and errors written back in the API's own shapes.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterable, Protocol


class InboundApi(Protocol):
    """What the pipeline asks of an inbound API's module. `payload` is always the client's own body
    (a Responses answer echoes its settings)."""

    ENDPOINT: str        # the metrics' and log's `endpoint`, and the adapters' name for it
    GUARDS_OWN_STREAM: bool   # output rules filter its native stream as it is (else: in the chat form)
    GUARDED_PARAM: str        # the request field of its guarded text: an input rule's 400 names it

    def check(self, payload: dict[str, Any]) -> None: ...

    def cacheable(self, payload: dict[str, Any]) -> bool: ...   # the answer depends on the request alone

    def to_chat(self, payload: dict[str, Any], provider_type: str) -> dict[str, Any]: ...

    def completion(self, answer: dict[str, Any], model: str) -> dict[str, Any]: ...   # a native answer's chat form

    def render(self, completion: dict[str, Any], payload: dict[str, Any]) -> bytes: ...

    def render_stream(self, chat_sse: AsyncIterator[bytes], payload: dict[str, Any]) -> AsyncIterator[bytes]: ...

    def replay(self, chat_sse: Iterable[bytes], payload: dict[str, Any]) -> list[bytes]: ...

    def chat_chunks(self, kept: Iterable[bytes], model: str) -> list[bytes]: ...

    def guarded_text(self, payload: dict[str, Any]) -> list[dict[str, Any]]: ...   # its text, as messages, for input rules

    def with_guarded_text(self, payload: dict[str, Any], masked: list[dict[str, Any]]) -> dict[str, Any]: ...

    def completed(self, kept: list[bytes]) -> bool: ...   # the stream has its end event

    def error_body(self, status: int, openai_body: bytes) -> bytes: ...

    def stream_error_event(self, message: str, kept: list[bytes]) -> bytes: ...   # after the stream's `kept` events
