"""Reading a provider's text/event-stream as it arrives: its events, one at a time.

For the adapters that translate a stream (Anthropic's and Gemini's events become OpenAI chunks);
an OpenAI-compatible stream is forwarded as bytes and never parsed here.
"""

from __future__ import annotations

from typing import AsyncIterator

import aiohttp


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, bytes]]:
    """(event name, data) for each event of the stream (name "message" when it has none; data
    lines joined with newlines); comments and events without data are skipped."""
    pending = b""
    async for chunk in response.content.iter_any():
        pending = (pending + chunk).replace(b"\r\n", b"\n")
        end = pending.rfind(b"\n\n")
        if end < 0:
            continue
        complete, pending = pending[:end], pending[end + 2:]
        for block in complete.split(b"\n\n"):
            event = parse(block)
            if event is not None:
                yield event
    # What is left has no blank line after it: an event cut short, dropped (as the SSE spec says).


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
