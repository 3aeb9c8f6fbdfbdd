"""Prometheus metrics every service exports, and the interceptor that records RPCs.

Names are the contract with the dashboards and alerts in helm/: change them together.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram

from services.rpc import Behaviour, HandlerInterceptor, method_name, rewrap

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
INGESTED_ITEMS = Counter(
    "teran_ingested_items_total",
    "Ingested items (images and sentences) by outcome and status code",
    ["kind", "outcome", "code"],
)
AUTH_FAILURES = Counter(
    "teran_auth_failures_total",
    "RPCs refused by authentication (unauthenticated) or authorisation (permission_denied)",
    ["method", "reason"],
)
LIMITED_RPCS = Counter(
    "teran_limited_rpcs_total",
    "RPCs refused by a server limit (concurrency, open streams, rate, idle stream)",
    ["method", "limit"],
)
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


def final_code(context: grpc.ServicerContext, error: bool) -> str:
    """The status the caller got: the code set or aborted with; a deadline that passed or a
    cancel while the method ran, even if it then returned normally; UNKNOWN for an escape."""
    code = context.code() if hasattr(context, "code") else None
    if code is not None and code != grpc.StatusCode.OK:
        return str(code.name)
    if not context.is_active():
        remaining = context.time_remaining()
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
    return "UNKNOWN" if error else "OK"


class MetricsInterceptor(HandlerInterceptor):
    """Counts and times every RPC by method and final status code (all four handler kinds)."""

    def around(
        self, handler: grpc.RpcMethodHandler, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        method = method_name(handler_call_details)

        def finish(start: float, context: grpc.ServicerContext, error: bool) -> None:
            RPC_LATENCY.labels(method).observe(time.perf_counter() - start)
            RPC_REQUESTS.labels(method, final_code(context, error)).inc()

        def unary(behaviour: Behaviour) -> Behaviour:
            def counted(request: Any, context: grpc.ServicerContext) -> Any:
                start, error = time.perf_counter(), False
                try:
                    return behaviour(request, context)
                except BaseException:
                    error = True
                    raise
                finally:
                    finish(start, context, error)

            return counted

        def streaming(behaviour: Behaviour) -> Behaviour:
            def counted(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                start, error = time.perf_counter(), False
                try:
                    yield from behaviour(request, context)
                except BaseException:
                    error = True
                    raise
                finally:
                    finish(start, context, error)

            return counted

        return rewrap(handler, unary, streaming)
