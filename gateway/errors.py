"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with the right status."""

from __future__ import annotations

import orjson
from starlette.responses import Response


class GatewayError(Exception):
    """An error the client should see, already in OpenAI's vocabulary."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)

    def response(self) -> Response:
        return Response(self.body(), self.status, self.headers, media_type="application/json")


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", None, param)


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404, f"The model '{model}' does not exist or you do not have access to it.",
        "invalid_request_error", "model_not_found", "model",
    )


def too_busy(provider: str, reason: str, retry_after_s: int) -> GatewayError:
    return GatewayError(
        429, f"Provider '{provider}' is at its concurrency limit ({reason}); retry after {retry_after_s}s.",
        "rate_limit_error", "rate_limit_exceeded", None, {"retry-after": str(retry_after_s)},
    )


def limits_unavailable() -> GatewayError:
    """The state backend (Redis) cannot be asked, and `state.on_error: deny` says refuse."""
    return GatewayError(503, "The gateway cannot check its limits now; try again shortly.", "server_error",
                        "limits_unavailable", headers={"retry-after": "1"})


def upstream_unreachable(provider: str, detail: str) -> GatewayError:
    return GatewayError(502, f"Provider '{provider}' could not be reached: {detail}", "api_error", "upstream_error")


def upstream_invalid(provider: str, detail: str) -> GatewayError:
    return GatewayError(502, f"Provider '{provider}' sent an invalid response: {detail}", "api_error", "upstream_error")


def upstream_timeout(provider: str, timeout_s: float) -> GatewayError:
    return GatewayError(504, f"Provider '{provider}' did not answer within {timeout_s:g}s.", "api_error", "upstream_timeout")
