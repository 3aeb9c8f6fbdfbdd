"""Admission: at most so many unary RPCs and so many open streams at once. Past a limit an RPC
gets RESOURCE_EXHAUSTED at once instead of queueing for a thread, so a flood of one kind (say,
Ingest streams that never send) cannot stall searches, and health checks are never counted.

The server's thread pool is sized from these limits with room to spare (`pool_size`), so the
refusal itself always finds a thread. A request stream that sends nothing for `stream_idle_s`
is ended with DEADLINE_EXCEEDED; what it sent before is still answered. Searches take turns,
`search_slots` at a time, so a crowd of them cannot starve ingestion of the CPU.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc

from services.config import LimitsCfg
from services.metrics import LIMITED_RPCS
from services.rpc import Behaviour, HandlerInterceptor, method_name, rewrap
from services.security.auth import METHOD_ROLES, OPEN
from services.security.keys import Role

SPARE_THREADS = 8
"""Threads beyond the limits: health checks and the refusals themselves."""


def pool_size(limits: LimitsCfg) -> int:
    return limits.max_concurrent_rpcs + limits.max_open_streams + SPARE_THREADS


class Gate:
    """A counter that admits up to `limit` holders and refuses, never waits, past it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.held >= self.limit:
                return False
            self.held += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.held -= 1


class Turns:
    """At most `slots` holders at once; others wait in line, each no longer than its RPC's
    remaining time (or `max_wait_s`)."""

    def __init__(self, slots: int, max_wait_s: float = 30.0) -> None:
        self.slots = slots
        self.max_wait_s = max_wait_s
        self._free = threading.BoundedSemaphore(slots)

    def take(self, context: grpc.ServicerContext) -> bool:
        remaining = context.time_remaining()
        wait = self.max_wait_s if remaining is None else max(0.0, min(remaining, self.max_wait_s))
        return self._free.acquire(timeout=wait)

    def give(self) -> None:
        self._free.release()


class AdmissionInterceptor(HandlerInterceptor):
    def __init__(self, limits: LimitsCfg) -> None:
        self.unary = Gate(limits.max_concurrent_rpcs)
        self.streams = Gate(limits.max_open_streams)
        self.searches = Turns(limits.search_slots or os.cpu_count() or 1)
        self.idle_s = limits.stream_idle_s

    def around(
        self, handler: grpc.RpcMethodHandler, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        full = str(handler_call_details.method)
        if full in METHOD_ROLES and METHOD_ROLES[full] is OPEN:
            return handler
        method = method_name(handler_call_details)
        if handler.request_streaming:
            gate, limit, what = self.streams, "max_open_streams", "streams open"
        else:
            gate, limit, what = self.unary, "max_concurrent_rpcs", "RPCs in progress"

        def refuse(context: grpc.ServicerContext) -> None:
            LIMITED_RPCS.labels(method, limit).inc()
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"server busy: {gate.limit} {what} (server.limits.{limit}); retry with backoff",
            )

        idle_s = self.idle_s if handler.request_streaming else None

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            if idle_s is None:
                return request
            return _idle_guard(request, context, idle_s, method)

        turns = self.searches if METHOD_ROLES.get(full) is Role.SEARCH else None

        def unary(behaviour: Behaviour) -> Behaviour:
            def admitted(request: Any, context: grpc.ServicerContext) -> Any:
                if not gate.enter():
                    refuse(context)
                try:
                    if turns is None:
                        return behaviour(guarded(request, context), context)
                    if not turns.take(context):
                        LIMITED_RPCS.labels(method, "search_slots").inc()
                        context.abort(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"server busy: waited for one of {turns.slots} search slots "
                            "(server.limits.search_slots) until the deadline; retry with backoff",
                        )
                    try:
                        return behaviour(request, context)
                    finally:
                        turns.give()
                finally:
                    gate.leave()

            return admitted

        def streaming(behaviour: Behaviour) -> Behaviour:
            def admitted(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                if not gate.enter():
                    refuse(context)
                try:
                    yield from behaviour(guarded(request, context), context)
                finally:
                    gate.leave()

            return admitted

        return rewrap(handler, unary, streaming)


_END = object()
CHECK_S = 0.25
"""How often a waiting stream looks whether its caller is still there."""


def _idle_guard(
    requests: Iterator[Any], context: grpc.ServicerContext, idle_s: float, method: str
) -> Iterator[Any]:
    """`requests`, read ahead by a thread of its own, so that a wait longer than `idle_s` ends
    the RPC here (the status is set on the reader's side and stands when the method returns)."""
    inbox: queue.Queue[Any] = queue.Queue(maxsize=1)

    def put(item: Any) -> bool:
        while context.is_active():
            try:
                inbox.put(item, timeout=1.0)
                return True
            except queue.Full:
                continue
        return False  # the RPC is over: nobody reads any more

    def pump() -> None:
        try:
            for request in requests:
                if not put(request):
                    return
        except Exception as err:  # the caller went away: the consumer sees the end
            put(err)
        else:
            put(_END)

    threading.Thread(target=pump, name=f"{method}-reader", daemon=True).start()
    last = time.monotonic()
    while True:
        try:
            item = inbox.get(timeout=min(idle_s, CHECK_S))
        except queue.Empty:
            if not context.is_active():
                return  # cancelled, or its deadline passed
            if time.monotonic() - last > idle_s:
                LIMITED_RPCS.labels(method, "stream_idle_s").inc()
                context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"stream idle for more than {idle_s:g} s (server.limits.stream_idle_s)",
                )
            continue
        last = time.monotonic()
        if item is _END:
            return
        if isinstance(item, Exception):
            raise item
        yield item
