"""The wire's own failures, given the right codes: a request that does not decode is the
caller's mistake (INVALID_ARGUMENT naming the message type, where gRPC says INTERNAL), and a
response too large to send is refused with its size (RESOURCE_EXHAUSTED) before gRPC drops it
with a message the metrics would have counted as OK."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from services.rpc import Behaviour, HandlerInterceptor, rewrap


@dataclass
class Undecodable:
    """Stands in for a request message that failed to decode."""

    problem: str


def _decoder(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except (DecodeError, ValueError, TypeError, RuntimeError) as err:
            kind = type(err).__name__
            return Undecodable(f"request: not a valid message of this method ({kind})")

    return decode


class DecodingInterceptor(HandlerInterceptor):
    def __init__(self, max_send_bytes: int) -> None:
        self.max_send_bytes = max_send_bytes

    def _check_size(self, response: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(response, Message):
            size = response.ByteSize()
            if size > self.max_send_bytes:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"response: {size} bytes, more than the {self.max_send_bytes} a message "
                    "may carry (server.max_message_mb); ask for fewer results (top_k)",
                )
        return response

    def around(
        self, handler: grpc.RpcMethodHandler, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        if handler.request_deserializer is None:
            return handler
        streamed = bool(handler.request_streaming)
        check = self._check_size

        def requests(request: Any, context: grpc.ServicerContext) -> Any:
            if not streamed:
                if isinstance(request, Undecodable):
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.problem)
                return request
            return _checked_stream(request, context)

        def unary(behaviour: Behaviour) -> Behaviour:
            def decoded(request: Any, context: grpc.ServicerContext) -> Any:
                return check(behaviour(requests(request, context), context), context)

            return decoded

        def streaming(behaviour: Behaviour) -> Behaviour:
            def decoded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                for response in behaviour(requests(request, context), context):
                    yield check(response, context)

            return decoded

        return rewrap(handler, unary, streaming, _decoder(handler.request_deserializer))


def _checked_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
    """A request stream that ends the RPC with INVALID_ARGUMENT at its first bad message (the
    status is set here, on whichever thread reads the stream, and stands when the RPC ends)."""
    for index, request in enumerate(requests):
        if isinstance(request, Undecodable):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"message {index} of the stream: {request.problem}",
            )
        yield request
