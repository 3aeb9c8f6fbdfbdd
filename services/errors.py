"""Domain errors and their gRPC status codes, so servicers only map proto to domain.

Every error names the request field at fault; servicers never let another exception escape
as a crash (those become INTERNAL with a generic message and are logged).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

log = logging.getLogger(__name__)


class DependencyUnavailable(Exception):
    """A dependency (model server, vector store) cannot be reached: the caller gets UNAVAILABLE.

    Backends subclass it with their own name, so this module needs none of them."""

    component = "dependency"


class ServiceError(Exception):
    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class FailedPrecondition(ServiceError):
    """The request is valid but the system is not in a state to run it (e.g. a model version
    this process does not serve)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


def status_of(err: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status for an exception raised while serving a request."""
    if isinstance(err, ServiceError):
        return err.code, err.message
    if isinstance(err, DependencyUnavailable):
        return grpc.StatusCode.UNAVAILABLE, f"{err.component}: {err}"
    log.exception("unexpected error", exc_info=err)
    return grpc.StatusCode.INTERNAL, "internal error (logged on the server)"


def peer_error(err: grpc.RpcError, peer: str, field: str) -> ServiceError:
    """The domain error for a failed call to another service (the inverse of `status_of`): the
    caller's faults keep their status and name the caller's `field`; the peer's own name it."""
    code, details = err.code(), err.details() or ""
    problem = details.split(": ", 1)[-1]
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(field, problem)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(field, problem)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"{peer}: {details}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(f"{peer}: {details}")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        # our deployment's fault, not the caller's: a peer that will not take this service's key
        log.error("%s refused this service's key: %s", peer, details)
        return Unavailable(f"{peer}: this service's key was refused (server.auth.service_key_file)")
    return ServiceError(f"{peer}: {code.name} {details}")


def check_model(peer: str, answered: str, wanted: str | None) -> None:
    """A peer must answer with the model version asked for, or versions would mix."""
    if wanted and answered != wanted:
        raise FailedPrecondition(f"{peer} answered with model {answered}, not {wanted}")


F = TypeVar("F", bound=Callable[..., Any])


def grpc_errors(method: F) -> F:
    """Servicer method decorator: domain errors -> the matching status, never a crash."""

    @functools.wraps(method)
    def wrapped(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as err:
            code, message = status_of(err)
            context.abort(code, message)

    return wrapped  # type: ignore[return-value]
