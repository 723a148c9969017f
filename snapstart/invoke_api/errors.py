"""API errors on the wire, in Lambda's shapes.

Every non-2xx answer carries ``x-amzn-ErrorType: <Type>`` (botocore types the
exception from it) and a JSON body ``{"Type": "User"|"Service", "message": ...}``;
throttles add ``"Reason"`` and a ``Retry-After`` header. Function errors are *not*
API errors: they are 200 with ``X-Amz-Function-Error``.
"""

from __future__ import annotations

import json

from ..errors import SnapStartError, ThrottledError

__all__ = ["ApiError", "STATUS", "from_exception"]

STATUS = {
    "ResourceNotFoundException": 404,
    "ProvisionedConcurrencyConfigNotFoundException": 404,
    "UnknownOperationException": 404,
    "InvalidRequestContentException": 400,
    "InvalidParameterValueException": 400,
    "ValidationException": 400,
    "RequestTooLargeException": 413,
    "TooManyRequestsException": 429,
    "ResourceConflictException": 409,
    "UnsupportedMediaTypeException": 415,
    "ServiceException": 500,
}


class ApiError(Exception):
    def __init__(self, error_type: str, message: str, *, status: int | None = None,
                 extra: dict | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status or STATUS.get(error_type, 500)
        self.extra = extra or {}
        self.headers = headers or {}

    def parts(self) -> tuple[int, dict[str, str], bytes]:
        body = {"Type": "Service" if self.status >= 500 else "User", "message": self.message,
                **self.extra}
        headers = {"x-amzn-ErrorType": self.error_type, "Content-Type": "application/json",
                   **self.headers}
        return self.status, headers, json.dumps(body).encode()


def from_exception(exc: BaseException) -> ApiError:
    """Map any exception to the API error Lambda would send (unknown => 500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ThrottledError):
        return ApiError("TooManyRequestsException", exc.message,
                        extra={"Reason": exc.reason},
                        headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, SnapStartError) and exc.error_type in STATUS:
        return ApiError(exc.error_type, exc.message)
    if isinstance(exc, SnapStartError):
        return ApiError("ServiceException", f"{exc.error_type}: {exc.message}")
    return ApiError("ServiceException", "An internal error occurred.")

