"""The one gRPC server a process runs, whatever services it hosts.

Built once with the metrics interceptor, grpc.health.v1 and server reflection; services register
their servicers on it. On SIGTERM the health status turns NOT_SERVING first (load balancers stop
sending), in-flight RPCs get `shutdown_grace_s` to finish, then the server stops.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.config import ServerCfg
from services.metrics import MetricsInterceptor

log = logging.getLogger(__name__)

OVERALL = ""
"""The health service name that stands for the whole server (readiness)."""
LIVENESS = "liveness"
"""SERVING while the process runs, whatever its dependencies do (liveness probes)."""


class GrpcServer:
    def __init__(self, cfg: ServerCfg, max_workers: int = 32) -> None:
        self.cfg = cfg
        limit = cfg.max_message_mb << 20
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
            interceptors=[MetricsInterceptor()],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
            ],
        )
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._services: list[str] = []
        self.port = self.server.add_insecure_port(f"{cfg.host}:{cfg.grpc_port}")
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        return f"{self.cfg.host}:{self.port}"

    def add_service(self, full_name: str) -> None:
        """Record a registered service for health and reflection."""
        self._services.append(full_name)

    def set_serving(self, serving: bool, services: Iterable[str] | None = None) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in [OVERALL, *(services if services is not None else self._services)]:
            self.health.set(name, status)

    def start(self) -> None:
        reflection.enable_server_reflection(
            [*self._services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME],
            self.server,
        )  # fmt: skip
        self.server.start()
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        self.set_serving(True)
        log.info("gRPC on %s serving %s", self.address, ", ".join(self._services))

    def stop(self, grace: float | None = None) -> None:
        """Graceful: NOT_SERVING, drain in-flight RPCs for the grace period, stop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(self.cfg.shutdown_grace_s if grace is None else grace).wait()

    def wait(self) -> None:
        self.server.wait_for_termination()
