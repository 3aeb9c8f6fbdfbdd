"""The wire's own failures, given the right codes and counted: a request that does not decode
is the caller's mistake (INVALID_ARGUMENT, where gRPC says INTERNAL); a request over
`server.max_message_mb` is RESOURCE_EXHAUSTED with its size, checked here so the metrics see it
(gRPC itself only drops messages past twice the limit, `CORE_LIMIT_FACTOR`, unseen); and a
response too large to send is refused with its size before gRPC drops it with a status the
metrics would have counted as OK."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from services.rpc import Behaviour, HandlerInterceptor, rewrap

CORE_LIMIT_FACTOR = 2
"""gRPC's own receive limit, in multiples of the configured one."""


@dataclass
class Undecodable:
    """Stands in for a request message that failed to decode or was too large."""

    problem: str
    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT


def _decoder(deserialize: Callable[[bytes], Any], limit: int) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        if len(data) > limit:
            return Undecodable(
                f"request: {len(data)} bytes, more than the {limit} a message may carry "
                "(server.max_message_mb)",
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
        try:
            return deserialize(data)
        except (DecodeError, ValueError, TypeError, RuntimeError) as err:
            kind = type(err).__name__
            return Undecodable(f"request: not a valid message of this method ({kind})")

    return decode


class DecodingInterceptor(HandlerInterceptor):
    def __init__(self, max_message_bytes: int) -> None:
        self.max_send_bytes = max_message_bytes
        self.max_receive_bytes = max_message_bytes

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
                    context.abort(request.code, request.problem)
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

        decoder = _decoder(handler.request_deserializer, self.max_receive_bytes)
        return rewrap(handler, unary, streaming, decoder)


def _checked_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
    """A request stream that ends the RPC with INVALID_ARGUMENT at its first bad message (the
    status is set here, on whichever thread reads the stream, and stands when the RPC ends)."""
    for index, request in enumerate(requests):
        if isinstance(request, Undecodable):
            context.abort(
                request.code,
                f"message {index} of the stream: {request.problem}",
            )
        yield request
