"""The HTTP side of a request: its headers as one dict, and its body, never larger than allowed."""

from __future__ import annotations

from typing import Any

from starlette.requests import ClientDisconnect, Request

from ..errors import GatewayError


async def read_body(request: Request, headers: dict[str, str], limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    receive = request.receive
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def request_headers(scope: dict[str, Any]) -> dict[str, str]:
    """The request's headers as a plain dict, built once (ASGI servers lower-case the names)."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"The request body is larger than the gateway's limit of {limit} bytes.",
                        "invalid_request_error", "request_too_large")
