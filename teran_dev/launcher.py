"""How the development tools start the platform: a single-process configuration and
`python -m services` as a child process, READY awaited on its stdout, stopped with SIGTERM as an
orchestrator would. The demo, `make serve`, `make up`, the benchmarks and the tests use it."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def services_command(config: Path, target: str = "all", log_level: str = "WARNING") -> list[str]:
    """The command line of one platform process."""
    return [sys.executable, "-m", "services", "--config", str(config), "--target", target,
            "--log-level", log_level]  # fmt: skip


def write_config(workdir: Path, checkpoint: Path) -> Path:
    """Single-process settings: every service, fresh embedded store, free ports."""
    store = workdir / "store"
    shutil.rmtree(store, ignore_errors=True)
    config = {
        "target": "all",
        "server": {"host": "127.0.0.1", "grpc_port": 0, "metrics_port": 0, "shutdown_grace_s": 2},
        "common": {
            "model": {"checkpoint": str(checkpoint.resolve())},
            "inference": {"backend": "inprocess"},
            "store": {"kind": "edge", "path": str(store.resolve())},
        },
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


class ServerProcess:
    """`python -m services --config FILE --target all` as a child: started, READY awaited,
    stopped with SIGTERM (then killed if it does not exit)."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[str] = open(log_path, "w", encoding="utf-8")  # noqa: SIM115
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services", "--config", str(config), "--target", "all",
             "--log-level", "WARNING"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=self._log, text=True,
        )  # fmt: skip
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_ready(self, timeout: float) -> str:
        """The address from the READY line; RuntimeError (with the log's tail) otherwise."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise RuntimeError(f"server exited ({self.proc.wait()}):\n{self.log_tail()}")
            if line.startswith("READY "):
                return line.split(maxsplit=1)[1]
        raise RuntimeError(f"server not READY after {timeout:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait for the graceful shutdown; SIGKILL after `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)


def merged(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """`values` over `base`, mappings merged key by key (as Helm merges values files)."""
    out = dict(base)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out
