"""TLS for the server and for its channels to peers: PEM files, re-read when they change (so a
certificate that cert-manager renews is picked up without a restart)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import grpc

from services.config import TlsCfg

log = logging.getLogger(__name__)


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


class ServerCertificates:
    """The server's certificate configuration, rebuilt when any of its files changes."""

    def __init__(self, cfg: TlsCfg) -> None:
        assert cfg.cert_file is not None and cfg.key_file is not None
        self.cfg = cfg
        self._files = [p for p in (cfg.cert_file, cfg.key_file, cfg.client_ca_file) if p]
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self.initial = self._build()

    def _stamps(self) -> tuple[int, ...]:
        return tuple(os.stat(p).st_mtime_ns for p in self._files)

    def _build(self) -> grpc.ServerCertificateConfiguration:
        cfg = self.cfg
        return grpc.ssl_server_certificate_configuration(
            [(_read(cfg.key_file), _read(cfg.cert_file))],
            root_certificates=_read(cfg.client_ca_file),
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC asks on new connections: a new configuration when the files changed."""
        with self._lock:
            try:
                stamp = self._stamps()
                if stamp == self._stamp:
                    return None
                built = self._build()
            except (OSError, ValueError) as err:
                log.error("keeping the previous TLS certificate: %s", err)
                return None
            self._stamp = stamp
            log.info("TLS certificate reloaded from %s", self.cfg.cert_file)
            return built


def server_credentials(cfg: TlsCfg) -> grpc.ServerCredentials:
    certificates = ServerCertificates(cfg)
    return grpc.dynamic_ssl_server_credentials(
        certificates.initial,
        certificates.fetch,
        require_client_authentication=cfg.client_ca_file is not None,
    )
