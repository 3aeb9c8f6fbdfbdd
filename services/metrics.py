"""Prometheus metrics every service exports, and the interceptor that records RPCs.

Names are the contract with the dashboards and alerts in helm/: change them together.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

RPC_REQUESTS = Counter(
    "teran_rpc_requests_total", "RPCs handled, by method and status code", ["method", "code"]
)
RPC_LATENCY = Histogram(
    "teran_rpc_latency_seconds", "RPC handling time", ["method"], buckets=LATENCY_BUCKETS
)
DEPENDENCY_LATENCY = Histogram(
    "teran_dependency_latency_seconds",
    "Time spent in calls to dependencies (inference, store, peers)",
    ["dependency", "operation"],
    buckets=LATENCY_BUCKETS,
)
DEPENDENCY_ERRORS = Counter(
    "teran_dependency_errors_total", "Failed dependency calls", ["dependency", "operation"]
)
DEPENDENCY_UP = Gauge("teran_dependency_up", "1 when the dependency answers", ["dependency"])
INGESTED_ITEMS = Counter("teran_ingested_items_total", "Ingest items by outcome", ["outcome"])
INGESTED_BYTES = Counter("teran_ingested_bytes_total", "Bytes of images and features ingested")
MODEL_BATCH_SIZE = Histogram(
    "teran_model_batch_size",
    "Items per model call after micro-batching",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
QUEUE_DEPTH = Gauge("teran_queue_depth", "Items waiting for a model call", ["model"])
UPGRADE_ITEMS = Gauge(
    "teran_upgrade_items",
    "Items of the current upgrade pass: to re-encode or delete (total) and done",
    ["model_version", "state"],
)
UPGRADE_PHASE = Gauge(
    "teran_upgrade_phase",
    "Phase of the last upgrade to a version: 1 copy, 2 switch, 3 catch-up, 4 done",
    ["model_version"],
)


class timed:
    """Context manager timing one dependency call and counting its failures."""

    def __init__(self, dependency: str, operation: str) -> None:
        self.dependency, self.operation = dependency, operation

    def __enter__(self) -> timed:
        self.start = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        DEPENDENCY_LATENCY.labels(self.dependency, self.operation).observe(
            time.perf_counter() - self.start
        )
        if exc_type is not None:
            DEPENDENCY_ERRORS.labels(self.dependency, self.operation).inc()


def _code_of(context: grpc.ServicerContext) -> str:
    code = context.code() if hasattr(context, "code") else None
    return (code or grpc.StatusCode.OK).name


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts and times every RPC by method and final status code (all four handler kinds)."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]

        def finish(start: float, context: grpc.ServicerContext, error: bool) -> None:
            RPC_LATENCY.labels(method).observe(time.perf_counter() - start)
            code = _code_of(context)
            if error and code == "OK":
                code = "UNKNOWN"
            RPC_REQUESTS.labels(method, code).inc()

        def unary(behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                start, error = time.perf_counter(), False
                try:
                    return behaviour(request, context)
                except BaseException:
                    error = True
                    raise
                finally:
                    finish(start, context, error)

            return wrapped

        def streaming(
            behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
        ) -> Callable[..., Iterator[Any]]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                start, error = time.perf_counter(), False
                try:
                    yield from behaviour(request, context)
                except BaseException:
                    error = True
                    raise
                finally:
                    finish(start, context, error)

            return wrapped

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                unary(handler.unary_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                unary(handler.stream_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                streaming(handler.unary_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                streaming(handler.stream_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return handler
