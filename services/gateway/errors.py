"""gRPC status -> HTTP status and a JSON body that names the field at fault.

The services write their messages as `field: problem` (services.errors), so the field is read
back from there. A client's mistake is never a 500: only INTERNAL, UNKNOWN and DATA_LOSS are.
"""

from __future__ import annotations

import re
from typing import Any

import grpc
from fastapi.responses import JSONResponse
from pydantic import BaseModel

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
}
_FIELD = re.compile(r"^([A-Za-z_][\w]*(?:\[\d+\])?(?:\.[A-Za-z_]\w*(?:\[\d+\])?)*): ")
_TOO_LARGE = re.compile(r"\b(bytes|MiB|pixels|max_message_mb|max_image_bytes|too large)\b")


class ErrorBody(BaseModel):
    """What every failed call answers: the gRPC code's name, the HTTP status, the message and
    the request field it names (empty when it names none)."""

    code: str
    status: int
    message: str
    field: str = ""


class Error(BaseModel):
    error: ErrorBody


def http_status(code: grpc.StatusCode, message: str) -> int:
    """RESOURCE_EXHAUSTED is 413 for something too large, 429 for too many or too often."""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and _TOO_LARGE.search(message):
        return 413
    return HTTP_STATUS.get(code, 500)


def field_of(message: str) -> str:
    match = _FIELD.match(message)
    return match.group(1) if match else ""


def error_response(
    code: grpc.StatusCode, message: str, field: str | None = None, status: int | None = None
) -> JSONResponse:
    body = ErrorBody(
        code=code.name,
        status=status if status is not None else http_status(code, message),
        message=message,
        field=field if field is not None else field_of(message),
    )
    return JSONResponse(Error(error=body).model_dump(), status_code=body.status)


def from_rpc_error(err: grpc.RpcError) -> JSONResponse:
    code: grpc.StatusCode = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details: str = (err.details() if hasattr(err, "details") else "") or ""
    if code == grpc.StatusCode.UNAVAILABLE and not field_of(details):
        details = f"the search service is unavailable: {details}"
    return error_response(code, details)


def validation_response(errors: list[Any]) -> JSONResponse:
    """FastAPI's request checks (types, unknown fields, missing parts) as one 400."""
    first = errors[0] if errors else {}
    location = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    field = ".".join(location)
    problem = first.get("msg", "invalid request")
    message = f"{field}: {problem}" if field else str(problem)
    return error_response(grpc.StatusCode.INVALID_ARGUMENT, message, field, 400)
