"""`make demo`: the platform end to end, the way a user would run it, on this machine.

Writes a single-process configuration (every service, embedded store, in-process inference,
free ports), starts `python -m services` as a subprocess, streams synthetic scenes and the real
photos that ship inside scikit-image through ImageEncoder.Ingest, then measures the model on its
synthetic collection: held-out captions, each with one right image, the rank of that image and
R@1, three of them shown in full with explanations; and writes an HTML report whose thumbnails
show which region each query word aligned to. The photos are ingested but not searched: the demo
model was trained on synthetic scenes only. Then it stops the server with SIGTERM, as an
orchestrator would.

    python -m services.demo [--checkpoint models/teran-synthetic-tiny] [--workdir .cache/demo]
                            [--images 200]
"""

from __future__ import annotations

import base64
import html
import io
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated

import numpy as np
import typer
import yaml
from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from teran.data.synthetic import SyntheticScenes
from teran_client import IngestResult, Item, SearchResult, TeranClient, TeranError
from teran_client.client import FilterSpec, WordAlignment

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO / "models" / "teran-synthetic-tiny"
DEFAULT_WORKDIR = REPO / ".cache" / "demo"

PHOTOS: tuple[tuple[str, str], ...] = (
    ("astronaut", "astronaut.png"),
    ("chelsea", "chelsea.png"),
    ("coffee", "coffee.png"),
    ("rocket", "rocket.jpg"),
    ("camera", "camera.png"),
    ("coins", "coins.png"),
    ("moon", "moon.png"),
    ("clock", "clock_motion.png"),
    ("hubble_deep_field", "hubble_deep_field.jpg"),
    ("retina", "retina.jpg"),
    ("immunohistochemistry", "ihc.png"),
    ("colorwheel", "color.png"),
    ("cell", "cell.png"),
    ("brick", "brick.png"),
    ("grass", "grass.png"),
    ("page", "page.png"),
    ("eagle", "eagle.png"),
    ("lily", "lily_of_the_valley.jpg"),
)
"""scikit-image sample photos (loader, file). Some are fetched on first use rather than shipped
in the wheel: those are skipped, so the demo never touches the network."""

DEMO_SEED = 7
"""Seed of the demo's synthetic test scenes: neither the training (0) nor the validation (1) nor
the benchmark's test (0) scenes."""
HELD_OUT_CAPTIONS = 60
"""Captions whose true image's rank the demo measures (R@1 over the synthetic collection)."""
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
FUNCTION_WORDS = frozenset(
    {"a", "an", "the", "of", "to", "in", "on", "at", "is", "are", "and", "there", "with", "it"}
    | {"its", "this", "that", "image", "picture", "showing", "shapes", "coloured"}
)
"""Left out of the terminal's explanations only, to keep the tables readable."""
PALETTE = ("#ff4d4d", "#4dd2ff", "#ffd24d", "#7dff4d", "#ff4dff", "#ff9f40", "#ffffff", "#b266ff")


@dataclass
class QueryRun:
    """One search as the demo shows it: the query, its result, and where the image it was
    written for ranks (synthetic captions only)."""

    query: str
    result: SearchResult
    filter: FilterSpec | None = None
    target: str | None = None
    target_rank: int | None = None
    seconds: float = 0.0

    @property
    def words(self) -> int:
        return max(1, len(self.result.words))


@dataclass
class HeldOutRanks:
    """Where the true image ranks for each held-out caption (None: below the top 100)."""

    queries: list[tuple[str, str]]
    ranks: list[int | None]

    def recall(self, k: int) -> float:
        return sum(r is not None and r <= k for r in self.ranks) / max(1, len(self.ranks))

    def median(self) -> float:
        ordered = sorted(r if r is not None else 101 for r in self.ranks)
        return float(np.median(ordered)) if ordered else float("nan")

    def summary(self) -> str:
        return (
            f"R@1 {100 * self.recall(1):.1f}%, R@5 {100 * self.recall(5):.1f}%, median rank "
            f"{self.median():g} over {len(self.ranks)} held-out captions"
        )


@dataclass
class DemoData:
    items: list[Item] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


# --- data --------------------------------------------------------------------------------


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def _to_image(array: np.ndarray) -> Image.Image:
    """A scikit-image sample (uint8 grey, RGB, RGBA, bool or float) -> RGB picture."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        lo, hi = float(array.min()), float(array.max())
        array = ((array - lo) / ((hi - lo) or 1.0) * 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def load_photos(console: Console) -> tuple[list[tuple[str, bytes]], list[str]]:
    """(name, JPEG bytes) for the sample photos bundled with scikit-image, and skipped names."""
    try:
        import skimage.data as skdata
    except ImportError:
        console.print("[yellow]scikit-image not installed: no photos[/yellow]")
        return [], [name for name, _ in PHOTOS]
    bundled = Path(skdata.__file__).parent
    photos: list[tuple[str, bytes]] = []
    skipped: list[str] = []
    for name, filename in PHOTOS:
        if not (bundled / filename).is_file():  # would need a download: never try
            skipped.append(name)
            continue
        try:
            photos.append((name, _jpeg(_to_image(np.asarray(getattr(skdata, name)())))))
        except Exception:
            skipped.append(name)
    return photos, skipped


def demo_data(n_synthetic: int, console: Console) -> DemoData:
    """Synthetic test-split scenes (their first caption in the payload) and bundled photos."""
    data = DemoData()
    scenes = SyntheticScenes(n_synthetic, split="test", seed=DEMO_SEED)
    for i in range(n_synthetic):
        image_id = f"synthetic/{scenes.image_id(i)}"
        data.images[image_id] = _png(scenes.image(i))
        data.captions[image_id] = scenes.captions(i)[0]
        data.items.append(
            Item(
                id=image_id,
                image=data.images[image_id],
                payload={"source": "synthetic", "caption": data.captions[image_id]},
            )
        )
    photos, data.skipped = load_photos(console)
    for name, jpeg in photos:
        image_id = f"photo/{name}"
        data.images[image_id] = jpeg
        data.items.append(
            Item(
                id=image_id,
                image=jpeg,
                uri=f"skimage.data.{name}",
                payload={"source": "photo", "name": name},
            )
        )
    return data


def held_out_queries(n_synthetic: int, count: int = HELD_OUT_CAPTIONS) -> list[tuple[str, str]]:
    """(caption, image id): one distinctive caption (false for the other 3 images of its
    confusable group) of each of `count` ingested scenes spread over the collection, so each
    query has one right answer and the demo can say where it ranks."""
    if n_synthetic == 0 or count == 0:
        return []
    scenes = SyntheticScenes(n_synthetic, split="test", seed=DEMO_SEED)
    step = max(1, n_synthetic // count)
    out: list[tuple[str, str]] = []
    for index in range(0, n_synthetic, step)[:count]:
        captions = scenes.distinctive_captions(index) or scenes.captions(index)
        out.append((captions[0], f"synthetic/{scenes.image_id(index)}"))
    return out


# --- report ------------------------------------------------------------------------------


def annotate(image: bytes, alignment: Sequence[WordAlignment], width: int = 240) -> bytes:
    """A PNG thumbnail with one box per aligned region, labelled with the words it won."""
    picture = Image.open(io.BytesIO(image)).convert("RGB")
    scale = width / picture.width
    picture = picture.resize((width, max(1, round(picture.height * scale))))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=11)
    regions: dict[int, list[WordAlignment]] = {}
    for a in alignment:
        regions.setdefault(a.region, []).append(a)
    for k, (_, aligned) in enumerate(sorted(regions.items())):
        colour = PALETTE[k % len(PALETTE)]
        box = aligned[0].box
        x1, y1 = box.x1 * picture.width, box.y1 * picture.height
        x2, y2 = box.x2 * picture.width - 1, box.y2 * picture.height - 1
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=2)
        label = ", ".join(dict.fromkeys(a.word for a in aligned))
        left, top, right, bottom = draw.textbbox((x1 + 3, y1 + 2), label, font=font)
        draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill="#000000")
        draw.text((x1 + 3, y1 + 2), label, fill=colour, font=font)
    return _png(picture)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; background: #fafafa; color: #222; }
section { margin-bottom: 2.5em; }
.hits { display: flex; flex-wrap: wrap; gap: 1em; }
.hit { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .6em;
       width: 250px; font-size: 12px; }
.hit.target { border: 3px solid #2a9d3a; }
.hit img { display: block; margin-bottom: .4em; }
table.align { border-collapse: collapse; width: 100%; }
table.align td { padding: 1px 4px; border-top: 1px solid #eee; }
.muted { color: #777; }
"""


def write_report(
    path: str | Path,
    runs: Sequence[QueryRun],
    images: Mapping[str, bytes],
    title: str = "TERAN demo: sentences find images",
    notes: Sequence[str] = (),
    ranks: HeldOutRanks | None = None,
) -> Path:
    """A self-contained HTML page: per query, the hits' thumbnails (base64 PNGs) with the regions
    the query words aligned to, the scores and the word -> region table."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        *(f"<p class='muted'>{esc(n)}</p>" for n in notes),
    ]
    if ranks is not None and ranks.ranks:
        rows = "".join(
            f"<tr><td>{esc(q)}</td><td>{esc(t)}</td><td>{esc(_rank_text(r))}</td></tr>"
            for (q, t), r in zip(ranks.queries, ranks.ranks, strict=True)
        )
        parts.append(
            f"<section><h2>Held-out captions: {esc(ranks.summary())}</h2>"
            "<table class='align'><tr><th>caption</th><th>written for</th><th>rank</th></tr>"
            f"{rows}</table></section>"
        )
    for run in runs:
        r = run.result
        parts.append(f"<section><h2>{esc(run.query)}</h2>")
        meta = [f"aligned words: <b>{esc(' '.join(r.words))}</b>"]
        if run.filter:
            meta.append(f"filter: {esc(str(dict(run.filter)))}")
        if run.target is not None:
            meta.append(f"written for {esc(run.target)}: ranked {_rank_text(run.target_rank)}")
        meta.append(f"model {esc(r.model_version)}, {run.seconds * 1000:.0f} ms")
        parts.append(f"<p class='muted'>{' &middot; '.join(meta)}</p><div class='hits'>")
        for rank, hit in enumerate(r.hits, 1):
            css = "hit target" if hit.id == run.target else "hit"
            parts.append(f"<div class='{css}'>")
            picture = images.get(hit.id)
            if picture is not None:
                data = base64.b64encode(annotate(picture, hit.alignment)).decode("ascii")
                parts.append(f"<img alt='{esc(hit.id)}' src='data:image/png;base64,{data}'>")
            parts.append(
                f"<b>#{rank}</b> {esc(hit.id)}<br>MrSw <b>{hit.score:.2f}</b> "
                f"(mean cosine {hit.score / run.words:.2f} over {run.words} words)"
            )
            caption = hit.payload.get("caption") or hit.payload.get("name")
            if caption:
                parts.append(f"<br><span class='muted'>{esc(str(caption))}</span>")
            if hit.alignment:
                rows = "".join(
                    f"<tr><td>{esc(a.word)}</td><td>region {a.region}</td>"
                    f"<td>{a.similarity:.3f}</td></tr>"
                    for a in hit.alignment
                )
                parts.append(f"<table class='align'>{rows}</table>")
            parts.append("</div>")
        parts.append("</div></section>")
    parts.append("</body></html>")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


# --- server ------------------------------------------------------------------------------


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


# --- the demo ----------------------------------------------------------------------------


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


def print_ranks(console: Console, ranks: HeldOutRanks) -> None:
    table = Table(
        title="held-out captions: where the image each was written for ranks (synthetic "
        "collection)",
        title_justify="left",
    )
    table.add_column("rank", justify="right")
    table.add_column("caption", overflow="fold")
    table.add_column("written for", overflow="fold")
    for (query, target), rank in zip(ranks.queries, ranks.ranks, strict=True):
        table.add_row(_rank_text(rank), query, target)
    console.print(table)
    console.print(f"[bold]{ranks.summary()}[/bold]")


def _rank_text(rank: int | None) -> str:
    return "not in the top 100" if rank is None else f"#{rank}"


def explain_words(alignment: Sequence[WordAlignment]) -> str:
    """`word->region(similarity)` for the content words (the report lists every word)."""
    shown = [a for a in alignment if a.word.isalnum() and a.word.lower() not in FUNCTION_WORDS]
    return "  ".join(f"{a.word}->{a.region}({a.similarity:.2f})" for a in shown or alignment)


def print_run(console: Console, run: QueryRun) -> None:
    filtered = f"  [filter {dict(run.filter)}]" if run.filter else ""
    table = Table(title=f"{run.query}{filtered}", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("image", overflow="fold")
    table.add_column("MrSw", justify="right")
    table.add_column("mean", justify="right")
    table.add_column("content word -> region (cosine)", overflow="fold")
    for rank, hit in enumerate(run.result.hits, 1):
        why = explain_words(hit.alignment)
        mark = " *" if hit.id == run.target else ""
        mean = f"{hit.score / run.words:.2f}"
        table.add_row(str(rank), hit.id + mark, f"{hit.score:.2f}", mean, why)
    console.print(table)
    if run.target is not None:
        console.print(
            f"  the image this caption was written for (*): {_rank_text(run.target_rank)}"
        )


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
