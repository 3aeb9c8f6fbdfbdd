"""`make demo`: the platform end to end, the way a user would run it, on this machine.

Writes a single-process configuration (every service, embedded store, in-process inference,
free ports), starts `python -m services` as a subprocess, streams synthetic scenes and the real
photos that ship inside scikit-image through ImageEncoder.Ingest, then measures the model on its
synthetic collection: held-out captions, each with one right image, the rank of that image and
R@1, three of them shown in full with explanations; and writes an HTML report whose thumbnails
show which region each query word aligned to. The photos are ingested but not searched: the demo
model was trained on synthetic scenes only. Then it stops the server with SIGTERM, as an
orchestrator would.

    python -m teran_dev.demo [--checkpoint models/teran-synthetic-tiny] [--workdir .cache/demo]
                            [--images 200]"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from teran_client import IngestResult, Item, TeranClient, TeranError
from teran_client.results import FilterSpec
from teran_dev.demo_data import DEFAULT_CHECKPOINT, demo_data, held_out_queries
from teran_dev.launcher import REPO, ServerProcess, write_config
from teran_dev.report import HeldOutRanks, QueryRun, print_ranks, print_run, write_report

DEFAULT_WORKDIR = REPO / ".cache" / "demo"

EXPLAINED_QUERIES = 3
"""Of those, how many are shown in full with their explanations."""
SYNTHETIC_ONLY = {"source": "synthetic"}
PHOTO_NOTE = (
    "The photos were ingested as real JPEGs (decoded, regions extracted, stored), but this model "
    "was trained on synthetic scenes of coloured shapes only: how it ranks photos means nothing, "
    "so the demo does not search them. To search photos, train on captioned photos (COCO or "
    "Flickr30k: `python -m trainer.main --dataset coco ...`; your own: `--dataset folder`) or "
    "import a reference TERAN checkpoint with its bottom-up features (`teran-import`)."
)
SCORE_NOTE = (
    "Scores: MrSw = the sum, over the query's aligned words, of each word's best region cosine; "
    "'mean' is that sum divided by the number of words (a cosine, at most 1)."
)


def ingest(client: TeranClient, items: Sequence[Item], console: Console) -> list[IngestResult]:
    columns = (TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    results: list[IngestResult] = []
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("ingest", total=len(items))
        for result in client.ingest(items, window=64):
            results.append(result)
            progress.advance(task)
    return results


def run_query(
    client: TeranClient,
    query: str,
    top_k: int,
    flt: FilterSpec | None = None,
    target: str | None = None,
) -> QueryRun:
    start = time.perf_counter()
    result = client.search(query, top_k=top_k, filter=flt, explain=True)
    seconds = time.perf_counter() - start
    rank = target_rank(client, query, target, flt) if target is not None else None
    return QueryRun(query, result, flt, target, rank, seconds)


def target_rank(
    client: TeranClient, query: str, target: str, flt: FilterSpec | None = SYNTHETIC_ONLY
) -> int | None:
    """1-based rank of `target` among the top 100 hits of `query`, or None."""
    hits = client.search(query, top_k=100, filter=flt).hits
    return next((k for k, h in enumerate(hits, 1) if h.id == target), None)


def held_out_ranks(client: TeranClient, queries: Sequence[tuple[str, str]]) -> HeldOutRanks:
    return HeldOutRanks(list(queries), [target_rank(client, q, t) for q, t in queries])


def _process_age_s() -> float | None:
    """Seconds since this process started (Linux), so the total includes Python's imports."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def demo(
    checkpoint: Annotated[
        Path, typer.Option(help="checkpoint folder the server loads")
    ] = DEFAULT_CHECKPOINT,
    workdir: Annotated[
        Path, typer.Option(help="config, store (fresh each run), server log, report")
    ] = DEFAULT_WORKDIR,
    images: Annotated[int, typer.Option(min=0, help="synthetic scenes to ingest")] = 200,
    top_k: Annotated[int, typer.Option(min=1, max=100, help="hits shown per query")] = 5,
    ready_timeout: Annotated[float, typer.Option(help="seconds to wait for the server")] = 180.0,
) -> None:
    """Serve, ingest, search and explain, end to end on this machine."""
    started = time.perf_counter()
    console = Console()
    if not (checkpoint / "teran_config.json").is_file():
        console.print(
            f"[red]no checkpoint at {checkpoint}[/red]: train one (models/teran-synthetic-tiny) "
            "or pass --checkpoint DIR"
        )
        raise typer.Exit(2)
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir, checkpoint)
    console.print(f"checkpoint {checkpoint}; config {config}")

    server = ServerProcess(config.resolve(), workdir / "server.log")
    try:
        data = demo_data(images, console)  # while the server loads its model
        if data.skipped:
            console.print(f"photos not bundled (would need a download), skipped: "
                          f"{', '.join(data.skipped)}")  # fmt: skip
        address = server.wait_ready(ready_timeout)
        client = TeranClient(address)
        client.wait_ready(30.0)
        console.print(f"server READY on {address} after {time.perf_counter() - started:.1f} s")
        t0 = time.perf_counter()
        results = ingest(client, data.items, console)
        ingest_s = time.perf_counter() - t0
        failed = [r for r in results if not r.stored]
        console.print(
            f"stored {len(results) - len(failed)}, failed {len(failed)} in {ingest_s:.1f} s "
            f"({len(results) / max(ingest_s, 1e-9):.1f} images/s)"
        )
        for r in failed:
            console.print(f"  {r.id}: {r.status}: {r.message}", markup=False)
        stats = client.stats()
        console.print(f"collection: {stats.images} images, model {stats.model_version}")

        queries = held_out_queries(images)
        runs: list[QueryRun] = [
            run_query(client, q, top_k, SYNTHETIC_ONLY, target=t)
            for q, t in queries[:EXPLAINED_QUERIES]
        ]
        for run in runs:
            print_run(console, run)
        ranks = held_out_ranks(client, queries)
        if ranks.ranks:
            print_ranks(console, ranks)
        console.print(SCORE_NOTE)
        if stats.images > images:
            console.print(f"[yellow]{PHOTO_NOTE}[/yellow]")
        notes = [
            f"{stats.images} images ({images} synthetic test scenes, "
            f"{stats.images - images} scikit-image photos), model {stats.model_version}.",
            "Boxes: the region each query word aligned to best (MrSw), labelled with the words.",
            SCORE_NOTE,
            PHOTO_NOTE,
        ]
        report = write_report(workdir / "report.html", runs, data.images, notes=notes, ranks=ranks)
        client.close()
    except (TeranError, RuntimeError) as err:
        console.print(f"[red]demo failed[/red]: {err}")
        raise typer.Exit(1) from None
    finally:
        code = server.stop()
        style = "green" if code == 0 else "red"
        console.print(f"server stopped with SIGTERM: [{style}]exit {code}[/{style}]")
    console.print(f"report: {report}")
    total = _process_age_s()
    after = time.perf_counter() - started
    if total is None:
        console.print(f"total wall time {after:.1f} s (after imports)")
    else:
        console.print(f"total wall time {total:.1f} s ({after:.1f} s after imports)")


if __name__ == "__main__":
    typer.run(demo)
