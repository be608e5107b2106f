"""Every error credit_guard answers with, and the one envelope they share.

    CreditGuardError                    (base: status, type, code, message, param)
     ├── InvalidRequest          400    invalid_request_error
     ├── ModelNotPricedError     400    model_not_priced
     ├── AuthenticationFailed    401    authentication_error
     ├── InsufficientCredits     402    insufficient_credits   (carries the full 402 body)
     ├── RequestTooLarge         413    request_too_large
     ├── UnsupportedMediaType    415    unsupported_media_type
     ├── StoreUnavailableError   503    credit_store_unavailable
     └── PricingUnavailable      503    pricing_unavailable

The body of each is ``{"error": {...}}`` as ``design/error-contract.md`` fixes it.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from ._ids import random_hex

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = [
    "CreditGuardError",
    "InvalidRequest",
    "ModelNotPricedError",
    "AuthenticationFailed",
    "InsufficientCredits",
    "RequestTooLarge",
    "UnsupportedMediaType",
    "StoreUnavailableError",
    "PricingUnavailable",
    "error_body",
    "credit_error_handler",
    "install_handler",
    "request_id_from",
]


class CreditGuardError(Exception):
    """An error answered in the contract's envelope."""

    status: int = 400
    type: str = "invalid_request_error"
    code: str = "INVALID_REQUEST"

    def __init__(self, message: str, *, param: str | None = None, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.fields = fields
        #: Seconds for a ``Retry-After`` header (a transient refusal), or None.
        self.retry_after: int | None = None

    def error_object(self, request_id: str | None = None) -> dict[str, Any]:
        """The value of the envelope's ``error`` key."""
        error: dict[str, Any] = {
            "type": self.type,
            "code": self.code,
            "status": self.status,
            "param": self.param,
            "message": self.message,
        }
        error.update(self.fields)
        if request_id is not None:
            error["request_id"] = request_id
        return error


class InvalidRequest(CreditGuardError):
    """The body is not JSON, not an object, or a priced field is wrong; ``param``
    names the field."""

    status = 400
    type = "invalid_request_error"
    code = "INVALID_REQUEST"


class ModelNotPricedError(CreditGuardError):
    status = 400
    type = "model_not_priced"
    code = "MODEL_NOT_PRICED"


class AuthenticationFailed(CreditGuardError):
    status = 401
    type = "authentication_error"
    code = "INVALID_API_KEY"


class RequestTooLarge(CreditGuardError):
    status = 413
    type = "request_too_large"
    code = "REQUEST_TOO_LARGE"


class UnsupportedMediaType(CreditGuardError):
    status = 415
    type = "unsupported_media_type"
    code = "UNSUPPORTED_MEDIA_TYPE"


class StoreUnavailableError(CreditGuardError):
    status = 503
    type = "credit_store_unavailable"
    code = "CREDIT_STORE_UNAVAILABLE"


class PricingUnavailable(CreditGuardError):
    """The process that prices large bodies failed or did not answer in time;
    nothing was forwarded."""

    status = 503
    type = "pricing_unavailable"
    code = "PRICING_UNAVAILABLE"


class InsufficientCredits(CreditGuardError):
    """The 402.  Built by ``quote.insufficient`` with every field of the contract."""

    status = 402
    type = "insufficient_credits"
    code = "INSUFFICIENT_CREDITS"


# -- the envelope -------------------------------------------------------------

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_id_from(header: bytes | str | None) -> str:
    """The client's ``X-Request-ID`` when well formed (1-128 of ``A-Za-z0-9._:-``),
    else a new ``req_`` id.  A malformed header is replaced, never echoed."""
    if header:
        text = header.decode("latin-1") if isinstance(header, bytes) else header
        if _REQUEST_ID.fullmatch(text):
            return text
    return "req_" + random_hex(12)


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        # Exact decimal text as a JSON number: never a binary float.
        from .money import json_text

        return orjson.Fragment(json_text(value))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: object) -> bytes:
    """orjson with Decimal amounts written as their exact decimal text."""
    return orjson.dumps(value, default=_default)


def error_body(error: CreditGuardError, request_id: str) -> bytes:
    """The JSON envelope ``{"error": {...}}`` for ``error``."""
    return dumps({"error": error.error_object(request_id)})


def error_headers(error: CreditGuardError, request_id: str, body: bytes) -> list[tuple[bytes, bytes]]:
    """Response headers for an error answer (raw ASGI form)."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode("latin-1")),
    ]
    if error.retry_after is not None:
        headers.append((b"retry-after", str(error.retry_after).encode()))
    return headers


async def credit_error_handler(request: Request, exc: Exception) -> Response:
    """A Starlette / FastAPI exception handler answering any ``CreditGuardError``
    (e.g. an ``InsufficientCredits`` raised by the app's own handler) in the
    contract's envelope, with the request id of ``X-Request-ID`` or a new one."""
    from starlette.responses import Response

    if not isinstance(exc, CreditGuardError):
        raise exc
    request_id = request.scope.get("state", {}).get("credit_guard_request_id") or request_id_from(
        request.headers.get("x-request-id")
    )
    body = error_body(exc, request_id)
    headers = {k.decode(): v.decode("latin-1") for k, v in error_headers(exc, request_id, body)}
    return Response(body, status_code=exc.status, headers=headers, media_type="application/json")


def install_handler(app: Any) -> None:
    """Register ``credit_error_handler`` for ``CreditGuardError`` on a Starlette or
    FastAPI app."""
    app.add_exception_handler(CreditGuardError, credit_error_handler)
