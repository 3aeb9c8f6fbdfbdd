"""`make serve`: the single-process platform with the demo collection, searched from a browser.

Starts every service and the HTTP gateway in this process (the demo's configuration: embedded
store, in-process inference), ingests the demo's synthetic scenes and bundled photos over gRPC
and each scene's caption as a sentence (so an image opens its top sentences), prints the search
page's URL and serves until Ctrl-C. The collection is `teran_dev.demo`'s, built by its own
functions.

    python -m teran_dev.serve [--checkpoint models/teran-synthetic-tiny] [--port 8080]
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from services.config import load_settings
from services.main import start
from services.modules import GATEWAY
from teran_client import TeranClient
from teran_dev.demo import ingest
from teran_dev.demo_data import DEFAULT_CHECKPOINT, demo_data
from teran_dev.launcher import REPO, write_config

DEFAULT_WORKDIR = REPO / ".cache" / "serve"


def serve_demo(
    checkpoint: Path,
    workdir: Path,
    port: int,
    images: int,
    console: Console,
    stop: threading.Event,
    ready: list[str] | None = None,
) -> None:
    """The platform with the demo collection and its captions, until `stop` is set; the
    page's URL is printed and appended to `ready`."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir, checkpoint)
    running = start(load_settings(config, gateway={"port": port}))
    try:
        data = demo_data(images, console)
        with TeranClient(running.address) as client:
            client.wait_ready(30.0)
            results = ingest(client, data.items, console)
            sentences = [(f"caption/{i}", text) for i, text in data.captions.items()]
            client.ingest_sentences(sentences)
            stats = client.stats()
        stored = sum(r.stored for r in results)
        url = running.app.components[GATEWAY].url
        console.print(
            f"{stored} images and {stats.sentences} sentences, model {stats.model_version}\n"
            f"search page: [bold]{url}/[/bold]   (API: {url}/docs, gRPC: {running.address})\n"
            "try: a red circle above a blue square    (Ctrl-C stops)"
        )
        if ready is not None:
            ready.append(url)
        stop.wait()
    finally:
        running.stop()


def serve(
    checkpoint: Annotated[Path, typer.Option(help="checkpoint folder")] = DEFAULT_CHECKPOINT,
    workdir: Annotated[Path, typer.Option(help="config and store (fresh each run)")] = (
        DEFAULT_WORKDIR
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="the page's port (0: free)")] = 8080,
    images: Annotated[int, typer.Option(min=0, help="synthetic scenes to ingest")] = 200,
) -> None:
    """Serve the platform and its search page with the demo collection ingested."""
    console = Console()
    if not (checkpoint / "teran_config.json").is_file():
        console.print(f"[red]no checkpoint at {checkpoint}[/red]: pass --checkpoint DIR")
        raise typer.Exit(2)
    stop = threading.Event()

    def on_signal(signum: int, _: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serve_demo(checkpoint, workdir, port, images, console, stop)


if __name__ == "__main__":
    typer.run(serve)
