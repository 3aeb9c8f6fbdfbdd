"""Authentication and roles for every RPC: `authorization: Bearer <key>` metadata, checked
against the key ring before the method runs, then the key's own rate limit.

A method's role comes from this table, not from the servicers, so a new RPC is refused until
someone decides who may call it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc

from services.metrics import AUTH_FAILURES, LIMITED_RPCS
from services.rpc import HandlerInterceptor, metadata_value, method_name, refusal
from services.security.keys import ApiKey, KeyRing, Role

OPEN = None
"""Marks methods anyone may call (health checks, for probes and load balancers)."""

METHOD_ROLES: dict[str, Role | None] = {
    "/grpc.health.v1.Health/Check": OPEN,
    "/grpc.health.v1.Health/Watch": OPEN,
    "/teran.v1.Ranker/Search": Role.SEARCH,
    "/teran.v1.Ranker/SearchSentences": Role.SEARCH,
    "/teran.v1.Ranker/SearchSimilarImages": Role.SEARCH,
    "/teran.v1.Ranker/Stats": Role.SEARCH,
    "/teran.v1.Ranker/GetImage": Role.SEARCH,
    "/teran.v1.TextEncoder/EncodeText": Role.SEARCH,
    "/teran.v1.ImageEncoder/EncodeImage": Role.SEARCH,
    "/teran.v1.ImageEncoder/Ingest": Role.INGEST,
    "/teran.v1.Ranker/IngestSentences": Role.INGEST,
    "/teran.v1.Ranker/Delete": Role.INGEST,
    "/teran.v1.Admin/Status": Role.ADMIN,
    "/teran.v1.Admin/Upgrade": Role.ADMIN,
    "/teran.v1.Admin/DropVersion": Role.ADMIN,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Role.ADMIN,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Role.ADMIN,
}

BEARER = "bearer "


def bearer_key(details: grpc.HandlerCallDetails) -> str | None:
    value = metadata_value(details, "authorization")
    if value is None or not value.lower().startswith(BEARER):
        return None
    return value[len(BEARER) :].strip() or None


class TokenBucket:
    """`rate` requests per second on average, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = float(burst)
        self.stamp = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens < 1:
                return False
            self.tokens -= 1
            return True


class AuthInterceptor(HandlerInterceptor):
    """No key or an unknown one: UNAUTHENTICATED; a key without the method's role:
    PERMISSION_DENIED; over the key's rate: RESOURCE_EXHAUSTED. Counted by reason."""

    def __init__(
        self, keys: KeyRing, default_rate_per_s: float | None = None, default_burst: int = 50
    ) -> None:
        self.keys = keys
        self.default_rate = default_rate_per_s
        self.default_burst = default_burst
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def around(
        self, handler: grpc.RpcMethodHandler, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        full = str(handler_call_details.method)
        role = METHOD_ROLES.get(full, Role.ADMIN)
        if full in METHOD_ROLES and role is OPEN:
            return handler
        method = method_name(handler_call_details)
        key = bearer_key(handler_call_details)
        entry = self.keys.lookup(key) if key is not None else None
        if entry is None:
            AUTH_FAILURES.labels(method, "unauthenticated").inc()
            problem = "no API key" if key is None else "unknown API key"
            return refusal(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                f"authorization: {problem}; send 'authorization: Bearer <key>' metadata",
            )
        assert role is not None
        if role not in entry.roles:
            AUTH_FAILURES.labels(method, "permission_denied").inc()
            return refusal(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"authorization: key {entry.name!r} lacks the {role.value!r} role {method} needs",
            )
        bucket = self._bucket(entry)
        if bucket is not None and not bucket.take():
            LIMITED_RPCS.labels(method, "rate").inc()
            return refusal(
                handler,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"authorization: key {entry.name!r} is over its rate of {bucket.rate:g} "
                "requests/s; retry with backoff",
            )
        return handler

    def _bucket(self, entry: ApiKey) -> TokenBucket | None:
        rate = entry.rate_per_s or self.default_rate
        if rate is None:
            return None
        burst = entry.burst or self.default_burst
        with self._lock:
            bucket = self._buckets.get(entry.name)
            if bucket is None or (bucket.rate, bucket.burst) != (rate, burst):
                bucket = self._buckets[entry.name] = TokenBucket(rate, burst)
            return bucket
