"""Bearer tokens: read from an Authorization header, compared in constant time; the admin key."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from .errors import GatewayError


def bearer_token(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`, or None."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


def client_authorization(headers) -> str | None:
    """The client's credentials as an Authorization value: its `Authorization` header, else
    Anthropic's `x-api-key` (what the anthropic SDK and Claude Code send) as a bearer token."""
    given = headers.get("authorization")
    if given is None:
        key = headers.get("x-api-key")
        if key:
            return f"Bearer {key}"
    return given


def presents(authorization: str | None, key: str) -> bool:
    """Whether the header carries exactly `key` as its bearer token."""
    token = bearer_token(authorization)
    return token is not None and hmac.compare_digest(token.encode(), key.encode())


def require_admin(request: Request) -> None:
    """The admin key from the config, as a bearer token; without one configured, admin is off."""
    key = request.app.state.runtime.config.admin.key
    if key is None:
        raise GatewayError(403, "The admin endpoints are off: set admin.key in the config to use them.",
                           "invalid_request_error", "admin_disabled")
    if not presents(request.headers.get("authorization"), key):
        raise GatewayError(401, "The admin endpoints need the admin key as a bearer token.",
                           "invalid_request_error", "invalid_api_key")
