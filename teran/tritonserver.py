"""Run the real `tritonserver` that ships inside the nvidia-pytriton wheel over a model repository.

The wheel holds the server and the python backend but not a usable layout: the backend stub for
this Python has to be copied next to the backend, and the stub must load this interpreter's
libpython (not the system's) and see this environment's packages. `TritonServer` does that in a
scratch folder, binds free ports on 127.0.0.1 and waits on the readiness endpoint.

    with TritonServer(repo) as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

Several repositories (one `--model-repository` each) are served together when `repo` is a list,
e.g. the current and the next model version during an upgrade; their model names must differ
(`trainer.export --name-prefix`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType


class TritonStartError(RuntimeError):
    """The server exited or did not become ready; the message ends with its log."""


def pytriton_server_dir() -> Path:
    """The `tritonserver` folder inside the installed nvidia-pytriton wheel."""
    import pytriton

    folder = Path(pytriton.__file__).parent / "tritonserver"
    if not (folder / "bin" / "tritonserver").is_file():
        raise FileNotFoundError(f"no tritonserver binary under {folder}: install nvidia-pytriton")
    return folder


def _libs_dir() -> Path:
    import pytriton

    return Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TritonServer:
    """A local tritonserver process over `repo` (one repository or several); start/stop or use
    as a context manager."""

    def __init__(
        self,
        repo: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        startup_timeout: float = 60.0,
        log_verbose: int = 0,
        extra_args: tuple[str, ...] = (),
        ports: tuple[int, int, int] | None = None,
    ) -> None:
        """`repo`: a model repository, or a sequence of them served together (model names must
        not collide across them). `ports`: (grpc, http, metrics) to bind, e.g. to restart a
        server at the same URL; default: free ports picked at start."""
        paths = [repo] if isinstance(repo, str | os.PathLike) else list(repo)
        if not paths:
            raise ValueError("TritonServer needs at least one model repository")
        self.repos: tuple[Path, ...] = tuple(Path(p).resolve() for p in paths)
        self.repo = self.repos[0]
        """The first (or only) repository."""
        self.ports = ports
        self.startup_timeout = startup_timeout
        self.log_verbose = log_verbose
        self.extra_args = extra_args
        self.grpc_port = self.http_port = self.metrics_port = 0
        self._scratch: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def scratch(self) -> Path | None:
        return self._scratch

    @property
    def log_path(self) -> Path | None:
        return self._log

    def detach(self) -> None:
        """Forget the process: it keeps running after this object and this process are gone."""
        self._process = None
        self._scratch = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if self._log is None or not self._log.is_file():
            return ""
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])

    def _failure_report(self) -> str:
        """Triton's error lines (the cause is often far above the tail), then the tail."""
        if self._log is None or not self._log.is_file():
            return "(no log)"
        lines = self._log.read_text(errors="replace").splitlines()
        errors = [line for line in lines if re.match(r"E\d{4} ", line)][-20:]
        return "errors:\n" + "\n".join(errors) + "\nlog tail:\n" + "\n".join(lines[-25:])

    def _prepare(self) -> tuple[Path, dict[str, str]]:
        """Copy the server with this Python's backend stub; the environment the stub needs."""
        self._scratch = Path(tempfile.mkdtemp(prefix="teran-triton-"))
        server = self._scratch / "tritonserver"
        source = pytriton_server_dir()
        shutil.copytree(source, server, ignore=shutil.ignore_patterns("python_backend_stubs"))
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise FileNotFoundError(f"nvidia-pytriton has no python backend stub for {version}")
        shutil.copy2(stub, server / "backends" / "python" / stub.name)
        env = dict(os.environ)
        libdir = str(sysconfig.get_config_var("LIBDIR"))
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (libdir, str(_libs_dir()), env.get("LD_LIBRARY_PATH", "")) if p
        )
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        return server, env

    def start(self) -> TritonServer:
        """Start the server and return once it reports ready; TritonStartError otherwise."""
        if self.running:
            return self
        for repo in self.repos:
            if not repo.is_dir():
                raise FileNotFoundError(f"model repository {repo} does not exist")
        for attempt in range(3):
            try:
                self._launch()
                self._wait_ready()
                return self
            except TritonStartError as err:
                # a free port can be taken between the probe and the bind: pick new ones
                if self.ports or "already in use" not in str(err).lower() or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        server, env = self._prepare()
        self.grpc_port, self.http_port, self.metrics_port = self.ports or (
            free_port(),
            free_port(),
            free_port(),
        )
        self._log = server / "tritonserver.log"
        command = [
            str(server / "bin" / "tritonserver"),
            *(f"--model-repository={repo}" for repo in self.repos),
            f"--backend-directory={server / 'backends'}",
            "--grpc-address=127.0.0.1",
            "--http-address=127.0.0.1",
            "--metrics-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            f"--http-port={self.http_port}",
            f"--metrics-port={self.metrics_port}",
            f"--log-verbose={self.log_verbose}",
            "--exit-timeout-secs=10",
            *self.extra_args,
        ]
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def _ready(self) -> bool:
        url = f"http://{self.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.05
        while time.monotonic() < deadline:
            if not self.running:
                code = self._process.returncode if self._process else None
                report = self._failure_report()
                self.stop()
                raise TritonStartError(f"tritonserver exited with code {code}:\n{report}")
            if self._ready():
                return
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        report = self._failure_report()
        self.stop()
        raise TritonStartError(
            f"tritonserver not ready after {self.startup_timeout:.0f}s over "
            f"{', '.join(map(str, self.repos))}:\n{report}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its scratch folder."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                # its own session: this takes the python backend stubs down with it
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
