"""`python -m services --config FILE [--target all|image_encoder|text_encoder|ranker]`.

Starts the target's modules on one gRPC server, serves /metrics, watches the dependencies
(inference, store) and turns health NOT_SERVING while one is down, SERVING again when it
answers: no restart needed. SIGTERM or SIGINT: graceful shutdown.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from prometheus_client import start_http_server

from services.config import TARGETS, Settings, load_settings
from services.metrics import DEPENDENCY_UP
from services.modules import INFERENCE, STORE, App, start_modules, stop_modules
from services.server import GrpcServer

log = logging.getLogger("teran")
app_cli = typer.Typer(add_completion=False)

WATCH_INTERVAL_S = 2.0


class RunningApp:
    """A started process: its address, and a stop that drains then releases everything."""

    def __init__(self, app: App, metrics_port: int | None) -> None:
        self.app = app
        self.metrics_port = metrics_port
        self._stop = threading.Event()
        # the server starts SERVING: correct it before start() returns, not a period later
        self._serving = True
        self._check_dependencies()
        self._watch = threading.Thread(target=self._watch_dependencies, daemon=True)
        self._watch.start()

    @property
    def address(self) -> str:
        return self.app.server.address

    def _watch_dependencies(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S if self._serving else WATCH_INTERVAL_S / 4):
            self._check_dependencies()

    def _check_dependencies(self) -> None:
        healthy = True
        for name in (INFERENCE, STORE):
            component = self.app.components.get(name)
            if component is None:
                continue
            try:
                up = bool(component.healthy())
            except Exception:
                up = False
            DEPENDENCY_UP.labels(name).set(1 if up else 0)
            healthy &= up
        if healthy != self._serving:
            log.warning("dependencies %s: health %s", "back" if healthy else "down",
                        "SERVING" if healthy else "NOT_SERVING")  # fmt: skip
            self.app.server.set_serving(healthy)
            self._serving = healthy

    def stop(self, grace: float | None = None) -> None:
        self._stop.set()
        self.app.server.stop(grace)
        stop_modules(self.app)

    def wait(self) -> None:
        self.app.server.wait()


def start(settings: Settings) -> RunningApp:
    """Build and start a process for `settings.target`; returns once it serves."""
    server = GrpcServer(settings.server)
    app = App(settings=settings, server=server)
    start_modules(app)
    metrics_port = None
    if settings.server.metrics_port is not None:
        http, _ = start_http_server(settings.server.metrics_port, addr=settings.server.host)
        metrics_port = int(http.server_port)
    server.start()
    log.info("target %s ready on %s (metrics on %s)", settings.target, server.address, metrics_port)
    return RunningApp(app, metrics_port)


@app_cli.command()
def main(
    config: Annotated[Path | None, typer.Option(help="YAML configuration file")] = None,
    target: Annotated[str | None, typer.Option(help=f"one of {', '.join(TARGETS)}")] = None,
    list_targets: Annotated[bool, typer.Option(help="print the targets and exit")] = False,
    log_level: str = "INFO",
) -> None:
    if list_targets:
        typer.echo("\n".join(TARGETS))
        return
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    overrides: dict[str, Any] = {"target": target} if target else {}
    running = start(load_settings(config, **overrides))

    stopper = threading.Thread(target=running.stop, name="shutdown")

    def on_signal(signum: int, _: Any) -> None:
        log.info("signal %d: graceful shutdown", signum)
        if not stopper.is_alive() and stopper.ident is None:
            stopper.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"READY {running.address}", flush=True)
    running.wait()
    if stopper.ident is not None:
        stopper.join()  # modules (store, inference) close before the process exits


if __name__ == "__main__":
    app_cli()
