"""The platform as benchmarks measure it: `python -m services --target all` in a process of its
own (so the client's threads never share its interpreter), reached over gRPC on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from teran.v1 import ranker_pb2_grpc as rgrpc
from teran_client.channels import ChannelSecurity, open_channel

REPO = Path(__file__).resolve().parents[1]
TORCH_THREADS = 1
"""The server's in-process inference threads: on 2 cores shared with the store's search, two
torch threads preempted each other (a 12-token query took 10x longer than with one)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


class Server:
    """`python -m services --target all` over a store folder, in its own process.

    `config` is merged into the generated configuration; `api_key` is what `channel` sends."""

    def __init__(
        self,
        workdir: Path,
        checkpoint: str,
        folder: Path,
        store: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.port = free_port()
        base = {
            "target": "all",
            "server": {"grpc_port": self.port, "metrics_port": None},
            "common": {
                "model": {"checkpoint": str(Path(checkpoint).resolve())},
                "store": {"kind": "edge", "path": str(folder), **(store or {})},
                "inference": {"torch_threads": TORCH_THREADS},
            },
        }
        path = workdir / "server.yaml"
        path.write_text(yaml.safe_dump(_merged(base, config or {})))
        self.log = open(workdir / "server.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services", "--config", str(path)],
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        self.address = f"127.0.0.1:{self.port}"
        self.channel = open_channel(self.address, ChannelSecurity(api_key=api_key))
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: see {workdir / 'server.log'}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start within 180 s")
            time.sleep(0.3)
        self.ranker = rgrpc.RankerStub(self.channel)

    def rss_bytes(self, kinds: tuple[str, ...] = ("RssAnon", "RssFile")) -> int:
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        return sum(int(fields[k].split()[0]) * 1024 for k in kinds)

    def stop(self) -> None:
        self.channel.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
