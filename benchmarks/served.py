"""The platform as benchmarks measure it: `python -m services --target all` in a process of its
own (so the client's threads never share its interpreter; started by `teran_dev.launcher`),
reached over gRPC on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from teran_client.channels import ChannelSecurity, open_channel
from teran_dev.launcher import ServerProcess, merged
from teran_protos.v1 import ranker_pb2_grpc as rgrpc

STARTUP_TIMEOUT_S = 180.0
TORCH_THREADS = 1
"""The server's in-process inference threads: on 2 cores shared with the store's search, two
torch threads preempted each other (a 12-token query took 10x longer than with one)."""


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
        base = {
            "target": "all",
            "server": {"grpc_port": 0, "metrics_port": None},
            "common": {
                "model": {"checkpoint": str(Path(checkpoint).resolve())},
                "store": {"kind": "edge", "path": str(folder), **(store or {})},
                "inference": {"torch_threads": TORCH_THREADS},
            },
        }
        path = workdir / "server.yaml"
        path.write_text(yaml.safe_dump(merged(base, config or {})))
        self.process = ServerProcess(path, workdir / "server.log")
        self.address = self.process.wait_ready(STARTUP_TIMEOUT_S)
        self.channel = open_channel(self.address, ChannelSecurity(api_key=api_key))
        self.ranker = rgrpc.RankerStub(self.channel)

    def rss_bytes(self, kinds: tuple[str, ...] = ("RssAnon", "RssFile")) -> int:
        fields = {}
        for line in Path(f"/proc/{self.process.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        return sum(int(fields[k].split()[0]) * 1024 for k in kinds)

    def stop(self) -> None:
        self.channel.close()
        self.process.stop(timeout=30)


def run_clients(client: Callable[[int], None], clients: int) -> float:
    """`client(k)` for every k < `clients`, each on a thread of its own, all at once; the wall
    seconds until the last one returns."""
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0
