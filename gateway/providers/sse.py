"""Reading a text/event-stream as it arrives: its events, one at a time.

For the adapters that translate a stream (Anthropic's and Gemini's events become OpenAI chunks)
and for the inbound APIs that re-emit a chat stream in their own events; an OpenAI-compatible
stream on its way to a chat client is forwarded as bytes and never parsed here.
"""

from __future__ import annotations

from typing import AsyncIterator, Iterable, Iterator

import aiohttp


def events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, bytes]]:
    """(event name, data) for each event of a provider's stream (see `events_of`)."""
    return events_of(response.content.iter_any())


async def events_of(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, bytes]]:
    """(event name, data) for each event of a stream's bytes, however they are cut (name "message"
    when it has none; data lines joined with newlines); comments and events without data are
    skipped, and what is left at the end without its blank line is dropped (as the SSE spec says:
    an event cut short)."""
    pending = b""
    async for chunk in chunks:
        found, pending = split(pending + chunk)
        for event in found:
            yield event


def split(data: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    """The complete events in `data`, and the rest (an event not yet ended)."""
    data = data.replace(b"\r\n", b"\n")
    end = data.rfind(b"\n\n")
    if end < 0:
        return [], data
    found = [event for event in map(parse, data[:end].split(b"\n\n")) if event is not None]
    return found, data[end + 2:]


def complete_events(chunks: Iterable[bytes]) -> Iterator[tuple[str, bytes]]:
    """The complete events of a stream that has ended (its kept chunks)."""
    found, _ = split(b"".join(chunks))
    return iter(found)


def last_event_name(chunks: list[bytes]) -> bytes | None:
    """The `event:` name of a stream's last event (read back from its end however large that event
    is), or None when it has none."""
    tail = b""
    for chunk in reversed(chunks):
        tail = chunk + tail
        at = tail.rfind(b"event:")
        if at >= 0 and (at == 0 or tail[at - 1:at] == b"\n"):
            end = tail.find(b"\n", at)
            return tail[at + 6:end if end >= 0 else None].strip()
    return None


def parse(block: bytes) -> tuple[str, bytes] | None:
    name, data = "message", []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"event":
            name = value.decode("utf-8", "replace")
        elif field == b"data":
            data.append(value)
    return (name, b"\n".join(data)) if data else None
