"""A chat stream re-emitted in another API's events, by that API's writer (`feed` a chunk, `end`
after `[DONE]`): as it arrives (a translated stream), or whole (a cached answer's replay)."""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterable, Protocol

import orjson

from ..providers.sse import complete_events, events_of


class Writer(Protocol):
    def feed(self, chunk: dict[str, Any]) -> bytes: ...

    def end(self) -> bytes: ...


async def rewritten(chat_sse: AsyncIterator[bytes], writer: Writer) -> AsyncIterator[bytes]:
    """As it arrives; ends without the API's end event when the chat stream ended without
    `[DONE]` (the pump then adds the error event), or after an error chunk (written as the API's)."""
    async for _, data in events_of(chat_sse):
        if data == b"[DONE]":
            yield writer.end()
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(chunk, dict):
            out = writer.feed(chunk)
            if out:
                yield out
            if "error" in chunk:
                return


def replayed(chat_sse: Iterable[bytes], writer: Writer) -> list[bytes]:
    """A whole chat stream, ended by `[DONE]`."""
    out = []
    for _, data in complete_events(chat_sse):
        if data == b"[DONE]":
            out.append(writer.end())
            break
        chunk = orjson.loads(data)
        if isinstance(chunk, dict):
            out.append(writer.feed(chunk))
    return out
