"""`make up` / `make down` on this machine: Triton and the services as separate processes.

    python -m teran_dev.local up [--checkpoint models/teran-synthetic-tiny] [--workdir .cache/up]
    python -m teran_dev.local status [--workdir .cache/up]
    python -m teran_dev.local down [--workdir .cache/up]

`up` exports the checkpoint to a python-backend Triton repository under the workdir (once per
model version), starts a real tritonserver and the services detached (own sessions, logs under
`<workdir>/logs`), waits until each reports SERVING over gRPC health, writes
`<workdir>/state.json` and prints the endpoints. `down` stops them (SIGTERM, then SIGKILL).

The store decides the topology. The ranker and ImageEncoder.Ingest both need it; the embedded
store (qdrant-edge) can be opened by one process only (its WAL is locked), and qdrant-client's
local mode locks its folder the same way. So, unless `--qdrant-url` names a Qdrant server (then
text encoder, image encoder and ranker are three processes, the ranker reaching both encoders
over gRPC), the ranker's process also hosts the ImageEncoder service and owns the store; the text
encoder is its own process, reached over gRPC. Every service infers through Triton.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from services.modules import IMAGE_ENCODER, RANKER, SEARCH, TEXT_ENCODER
from teran.tritonserver import TritonServer, free_port
from teran_dev.launcher import services_command

log = logging.getLogger("teran")
app = typer.Typer(add_completion=False, no_args_is_help=True)

DEFAULT_CHECKPOINT = Path("models/teran-synthetic-tiny")
DEFAULT_WORKDIR = Path(".cache/up")
STATE_FILE = "state.json"
SERVICE_NAMES = {
    TEXT_ENCODER: "teran.v1.TextEncoder",
    IMAGE_ENCODER: "teran.v1.ImageEncoder",
    RANKER: "teran.v1.Ranker",
}


def ready(http_url: str) -> bool:
    """Triton's readiness endpoint answers 200."""
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=1.0) as r:
            return int(r.status) == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


# --- up / status / down -------------------------------------------------------------------


def ensure_repository(checkpoint: Path, workdir: Path) -> Path:
    """The python-backend repository of `checkpoint` under `workdir`, exported if missing."""
    from teran.checkpoint import load_checkpoint, model_version, read_header
    from teran.export import ONNX_FILE, check_parity
    from teran.regions import GridRegionExtractor
    from teran.triton_repo import MANIFEST_FILE, build_repository

    version = model_version(checkpoint)
    repo = workdir / f"repository-{version}"
    if (repo / MANIFEST_FILE).is_file():
        return repo
    typer.echo(f"exporting {checkpoint} (model {version}) to {repo} ...")
    model, tokenizer = load_checkpoint(checkpoint)
    # the extractor the model was trained with, as the in-process backend uses it
    cfg = model.cfg.vision.extractor
    extractor = GridRegionExtractor(cfg) if cfg is not None else None
    meta = {
        "path": str(checkpoint.resolve()),
        "meta": read_header(checkpoint).get("meta") or {},
        "model_version": version,
    }
    partial = workdir / f".repository-{version}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    folders = build_repository(model, partial, extractor=extractor, backend="python", meta=meta)
    files = {name: folder / "1" / ONNX_FILE for name, folder in folders.items()}
    report = check_parity(model, files, tokenizer, extractor)
    typer.echo("parity: " + ", ".join(f"{k} {v:.1e}" for k, v in report.items()))
    partial.rename(repo)
    return repo


@dataclass
class Proc:
    """A detached process `up` started, as the state file records it."""

    name: str
    pid: int
    log: str
    marker: str
    """A word of its command line: a recycled pid is not taken for it."""
    address: str | None = None
    """gRPC host:port."""
    http: str | None = None
    """Triton's HTTP host:port (readiness)."""
    metrics: str | None = None
    """host:port of /metrics."""
    services: tuple[str, ...] = ()

    def alive(self) -> bool:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(self.pid, os.WNOHANG) != (0, 0):  # our own child that exited
                return False
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False
        return self.marker.encode() in cmdline

    def signal_group(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)  # its own session: helpers (backend stubs) too


def _state_path(workdir: Path) -> Path:
    return workdir / STATE_FILE


def _write_state(workdir: Path, state: dict[str, Any]) -> None:
    tmp = _state_path(workdir).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(_state_path(workdir))


def _read_state(workdir: Path) -> dict[str, Any] | None:
    path = _state_path(workdir)
    return json.loads(path.read_text()) if path.is_file() else None


def _procs(state: dict[str, Any]) -> list[Proc]:
    return [Proc(**{**p, "services": tuple(p.get("services", ()))}) for p in state["processes"]]


def health(address: str, timeout: float = 1.0) -> str:
    """The gRPC health status of the whole server at `address` ("UNREACHABLE" if none)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError:
            return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def _status_of(proc: Proc) -> str:
    if not proc.alive():
        return "EXITED"
    if proc.name == "tritonserver":
        return "READY" if proc.http and ready(proc.http) else "NOT_READY"
    assert proc.address is not None
    return health(proc.address)


def _tail(path: str, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def _service_config(
    path: Path,
    target: str,
    common: dict[str, Any],
    grpc_port: int,
    metrics_port: int,
    ranker: dict[str, Any] | None = None,
) -> Path:
    data: dict[str, Any] = {
        "target": target,
        "server": {"host": "127.0.0.1", "grpc_port": grpc_port, "metrics_port": metrics_port},
        "common": common,
    }
    if ranker:
        data["ranker"] = ranker
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _spawn(name: str, command: list[str], logs: Path) -> tuple[int, str]:
    path = logs / f"{name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    with path.open("ab") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return process.pid, str(path)


def _wait_serving(proc: Proc, deadline: float) -> None:
    assert proc.address is not None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited; its log ({proc.log}):\n{_tail(proc.log)}")
        if health(proc.address) == "SERVING":
            return
        time.sleep(0.25)
    raise RuntimeError(f"{proc.name} not SERVING in time; its log ({proc.log}):\n{_tail(proc.log)}")


def stop_all(procs: list[Proc], timeout: float = 20.0) -> None:
    """SIGTERM every process group (reverse start order), then SIGKILL what is left."""
    for proc in reversed(procs):
        proc.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(p.alive() for p in procs):
        time.sleep(0.2)
    for proc in procs:
        proc.signal_group(signal.SIGKILL)


def _print_endpoints(state: dict[str, Any]) -> None:
    for proc in _procs(state):
        status = _status_of(proc)
        where = f"grpc {proc.address}  metrics http://{proc.metrics}/metrics"
        if proc.http:
            where += f"  http {proc.http}"
        services = f"  [{', '.join(proc.services)}]" if proc.services else ""
        typer.echo(f"{proc.name:<14} {status:<12} pid {proc.pid:<8} {where}{services}")
        typer.echo(f"{'':<14} log {proc.log}")


@app.command()
def up(
    checkpoint: Annotated[Path, typer.Option(help="checkpoint folder")] = DEFAULT_CHECKPOINT,
    workdir: Annotated[Path, typer.Option(help="repository, store, logs, state")] = DEFAULT_WORKDIR,
    qdrant_url: Annotated[
        str | None, typer.Option(help="a Qdrant server: one process per service")
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds for everything to be healthy")] = 180.0,
) -> None:
    """Start tritonserver and the services detached; return once all are healthy."""
    from teran.checkpoint import read_header

    workdir = workdir.resolve()
    checkpoint = checkpoint.resolve()
    try:
        read_header(checkpoint)
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"up: {err}", err=True)
        raise typer.Exit(2) from None
    existing = _read_state(workdir)
    if existing is not None:
        if all(p.alive() for p in _procs(existing)):
            typer.echo(f"already up ({_state_path(workdir)}):")
            _print_endpoints(existing)
            return
        typer.echo(f"stale state in {_state_path(workdir)}: run `down` first", err=True)
        raise typer.Exit(1)
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    repo = ensure_repository(checkpoint, workdir)
    state: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "repository": str(repo),
        "workdir": str(workdir),
        "processes": [],
        "scratch": [],
    }
    procs: list[Proc] = []

    def record(proc: Proc) -> None:
        procs.append(proc)
        state["processes"].append({**proc.__dict__, "services": list(proc.services)})
        _write_state(workdir, state)

    deadline = time.monotonic() + timeout
    try:
        triton = TritonServer(repo, startup_timeout=max(10.0, deadline - time.monotonic()))
        triton.start()
        assert triton.pid is not None and triton.log_path is not None
        log_copy = logs / "tritonserver.log"
        log_copy.unlink(missing_ok=True)
        log_copy.symlink_to(triton.log_path)
        state["scratch"].append(str(triton.scratch))
        metrics_at = f"127.0.0.1:{triton.metrics_port}"
        record(
            Proc(
                "tritonserver",
                triton.pid,
                str(log_copy),
                "tritonserver",
                triton.grpc_url,
                triton.http_url,
                metrics_at,
            )
        )
        triton.detach()
        store: dict[str, Any] = {"kind": "edge", "path": str(workdir / "store")}
        if qdrant_url:
            store = {"kind": "qdrant", "url": qdrant_url}
        common = {
            "model": {"checkpoint": str(checkpoint), "repository": str(repo)},
            "inference": {"backend": "triton", "triton_url": triton.grpc_url},
            "store": store,
        }

        def launch(name: str, target: str, hosted: tuple[str, ...], **ranker: Any) -> Proc:
            port, metrics = free_port(), free_port()
            config = _service_config(
                workdir / f"{name}.yaml", target, common, port, metrics, ranker
            )
            command = services_command(config, target, log_level="INFO")
            pid, path = _spawn(name, command, logs)
            names = tuple(SERVICE_NAMES[s] for s in hosted)
            address, metrics_at = f"127.0.0.1:{port}", f"127.0.0.1:{metrics}"
            proc = Proc(name, pid, path, str(config), address, None, metrics_at, names)
            record(proc)
            return proc

        text = launch("text_encoder", TEXT_ENCODER, (TEXT_ENCODER,))
        peers: dict[str, Any] = {"text_encoder_url": text.address}
        started = [text]
        if qdrant_url:
            image = launch("image_encoder", IMAGE_ENCODER, (IMAGE_ENCODER,))
            started.append(image)
            peers["image_encoder_url"] = image.address
            started.append(launch("ranker", RANKER, (RANKER,), **peers))
        else:
            started.append(launch("ranker", SEARCH, (IMAGE_ENCODER, RANKER), **peers))
        for proc in started:
            _wait_serving(proc, deadline)
    except BaseException as err:
        typer.echo(f"up failed: {err}", err=True)
        stop_all(procs)
        _cleanup(workdir, state)
        raise typer.Exit(1) from None
    typer.echo(f"up: state in {_state_path(workdir)}")
    _print_endpoints(state)


def _cleanup(workdir: Path, state: dict[str, Any]) -> None:
    """Keep Triton's log (it lives in the scratch folder), drop the scratch and the state."""
    for scratch in state.get("scratch", []):
        source = Path(scratch) / "tritonserver" / "tritonserver.log"
        target = workdir / "logs" / "tritonserver.log"
        if source.is_file():
            target.unlink(missing_ok=True)
            shutil.copyfile(source, target)
        shutil.rmtree(scratch, ignore_errors=True)
    _state_path(workdir).unlink(missing_ok=True)


@app.command()
def status(
    workdir: Annotated[Path, typer.Option(help="as given to up")] = DEFAULT_WORKDIR,
) -> None:
    """Print each process's health; exit 1 unless every one is up and healthy."""
    state = _read_state(workdir.resolve())
    if state is None:
        typer.echo("down (no state file)")
        raise typer.Exit(1)
    _print_endpoints(state)
    healthy = {"READY", "SERVING"}
    if not all(_status_of(p) in healthy for p in _procs(state)):
        raise typer.Exit(1)


@app.command()
def down(
    workdir: Annotated[Path, typer.Option(help="as given to up")] = DEFAULT_WORKDIR,
    timeout: Annotated[float, typer.Option(help="seconds before SIGKILL")] = 20.0,
) -> None:
    """Stop everything `up` started and remove the state file (logs and store stay)."""
    workdir = workdir.resolve()
    state = _read_state(workdir)
    if state is None:
        typer.echo("nothing to stop (no state file)")
        return
    procs = _procs(state)
    stop_all(procs, timeout)
    left = [p.name for p in procs if p.alive()]
    _cleanup(workdir, state)
    stopped = ", ".join(p.name for p in procs)
    typer.echo(f"down: stopped {stopped}" + (f"; still running: {left}" if left else ""))


if __name__ == "__main__":
    app()
