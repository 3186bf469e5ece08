"""Which targets a request tries, in what order, and what happens when one fails."""

from __future__ import annotations

from typing import Any

from ..errors import GatewayError
from ..record import RequestRecord
from ..runtime import Route
from ..upstream.call import Answer, TargetFailed, UpstreamStatus, call_target

# Upstream answers that mean "this target cannot answer now": try the next target, if any.
FALLBACK_STATUSES = frozenset({429, 500, 502, 503, 504})


async def forward(route: Route, payload: dict[str, Any], path: str, stream: bool,
                  headers: dict[str, str], record: RequestRecord) -> Answer:
    """Try the route's targets in order until one answers; raise the last error otherwise.

    Nothing has been sent to the client yet, so moving on to the next target is always safe.
    """
    last: GatewayError | None = None
    reason = ""
    for i, target in enumerate(route.targets):
        if i:
            record.fallbacks.append(reason)
        record.model, record.provider = target.model, target.provider.name
        try:
            return await call_target(target, payload, path, stream, headers, record)
        except UpstreamStatus as exc:
            record.error_kind = f"upstream_{exc.status}"
            record.upstream_errors.append((target.provider.name, _status_kind(exc.status)))
            if exc.status not in FALLBACK_STATUSES:
                raise
            last, reason = exc, str(exc.status)
        except TargetFailed as exc:
            record.error_kind = exc.kind
            record.upstream_errors.append((target.provider.name, exc.kind))
            last, reason = exc.error, exc.kind
    assert last is not None
    raise last



def _status_kind(status: int) -> str:
    if status == 429:
        return "http_429"
    return "http_5xx" if status >= 500 else "http_4xx"
