"""Server interceptors wrap a method's behaviour; this rebuilds a handler around a wrapper once,
for the four handler kinds, so each interceptor states only what it adds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

Behaviour = Callable[[Any, grpc.ServicerContext], Any]
Wrapper = Callable[[Behaviour], Behaviour]
"""Takes a behaviour (request or request iterator, context) and returns one of the same kind."""

_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def behaviour_of(handler: grpc.RpcMethodHandler) -> Behaviour:
    return (
        handler.unary_unary or handler.stream_unary or handler.unary_stream
        or handler.stream_stream
    )  # fmt: skip


def rewrap(
    handler: grpc.RpcMethodHandler,
    unary: Wrapper | None = None,
    streaming: Wrapper | None = None,
    deserializer: Callable[[Any], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour wrapped: `unary` for methods answering one message,
    `streaming` for those answering a stream (a generator function); and optionally another
    request deserializer."""
    wrap = streaming if handler.response_streaming else unary
    behaviour = behaviour_of(handler)
    factory = _FACTORIES[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return factory(
        wrap(behaviour) if wrap is not None else behaviour,
        deserializer or handler.request_deserializer,
        handler.response_serializer,
    )


def refusal(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that ends the RPC with `code` at once."""

    def refuse(behaviour: Behaviour) -> Behaviour:
        def aborted(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(code, message)

        return aborted

    def refuse_stream(behaviour: Behaviour) -> Behaviour:
        def aborted(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            context.abort(code, message)
            yield  # pragma: no cover - a generator, as the handler kind requires

        return aborted

    return rewrap(handler, refuse, refuse_stream)


def method_name(details: grpc.HandlerCallDetails) -> str:
    """`Search` for `/teran.v1.Ranker/Search`: the label metrics use."""
    return str(details.method).rsplit("/", 1)[-1]


def metadata_value(details: grpc.HandlerCallDetails, key: str) -> str | None:
    for name, value in details.invocation_metadata or ():
        if name == key:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


class HandlerInterceptor(grpc.ServerInterceptor):
    """An interceptor that works on the method's handler: subclasses say how in `around`."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        return None if handler is None else self.around(handler, handler_call_details)

    def around(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        raise NotImplementedError
