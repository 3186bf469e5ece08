"""Bearer tokens: read from an Authorization header, compared in constant time."""

from __future__ import annotations

import hmac


def bearer_token(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`, or None."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


def presents(authorization: str | None, key: str) -> bool:
    """Whether the header carries exactly `key` as its bearer token."""
    token = bearer_token(authorization)
    return token is not None and hmac.compare_digest(token.encode(), key.encode())
