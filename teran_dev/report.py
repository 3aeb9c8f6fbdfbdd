"""What the demo shows: the terminal tables and the HTML report whose thumbnails carry the box
each query word aligned to."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from rich.table import Table

from teran_client import SearchResult
from teran_client.results import FilterSpec, WordAlignment
from teran_dev.demo_data import png_bytes

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
    return png_bytes(picture)


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
