"""Every error credit_guard answers with, and the one envelope they share.

    CreditGuardError                    (base: status, type, code, message, param)
     ├── InvalidRequest          400    invalid_request_error
     ├── ModelNotPricedError     400    model_not_priced
     ├── AuthenticationFailed    401    authentication_error
     ├── InsufficientCredits     402    insufficient_credits   (carries the full 402 body)
     ├── RequestTooLarge         413    request_too_large
     ├── UnsupportedMediaType    415    unsupported_media_type
     └── StoreUnavailableError   503    credit_store_unavailable

The body of each is ``{"error": {...}}`` as ``design/error-contract.md`` fixes it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CreditGuardError",
    "InvalidRequest",
    "ModelNotPricedError",
    "AuthenticationFailed",
    "InsufficientCredits",
    "RequestTooLarge",
    "UnsupportedMediaType",
    "StoreUnavailableError",
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


class InsufficientCredits(CreditGuardError):
    """The 402.  Built by ``quote.insufficient`` with every field of the contract."""

    status = 402
    type = "insufficient_credits"
    code = "INSUFFICIENT_CREDITS"
