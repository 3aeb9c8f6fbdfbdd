"""`make demo`: what the platform does today, end to end on this machine, in under a minute.

1. Parity: this project's TERAN against the reference implementation's fixtures.
2. Encode and score: sentences through the real MiniLM backbone, image regions through the visual
   pipeline, each on its own, then TERAN's MrSw alignment with the word-region explanation.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.table import Table

from teran import create_model
from teran.alignment import pair_alignment
from trainer.refcheck import check

app = typer.Typer(add_completion=False)
console = Console()

QUERIES = [
    "A red bus drives down a busy city street.",
    "Two dogs play in the snow.",
    "A cat sleeps on an open laptop keyboard.",
]

COMING = [
    (
        "trainer",
        "training on COCO/F30k features, raw images and synthetic scenes; export to Triton",
    ),
    ("services", "gRPC ImageEncoder / TextEncoder / Ranker, Qdrant multivector store, make up"),
    ("helm", "Kubernetes chart, dashboards, zero-downtime model upgrades"),
]


def parity(shared: Path) -> bool:
    fixtures = [shared / "reference" / n for n in ("teran-tiny", "teran-tiny-shared")]
    present = [f for f in fixtures if f.is_dir()]
    if not present:
        console.print(f"[yellow]no reference fixtures under {shared}: parity step skipped[/]")
        return True
    return all(check(f) for f in present)


def encode_and_score() -> None:
    torch.manual_seed(0)
    start = time.perf_counter()
    model, tokenizer = create_model("teran-minilm-tiny")
    console.print(
        f"\nteran-minilm-tiny: real MiniLM backbone ({model.cfg.text.layers} of 6 layers kept), "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, loaded in "
        f"{time.perf_counter() - start:.1f}s. Its TERAN heads are not trained yet, so scores show "
        "the mechanics, not retrieval quality."
    )
    tokens = tokenizer(QUERIES)
    n_images, n_regions = 4, 9
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(n_images, n_regions, model.cfg.vision.feat_dim, generator=gen)
    grid = torch.arange(n_regions, dtype=torch.float32)
    x1, y1 = (grid % 3) / 3, (grid // 3) / 3
    boxes = torch.stack([x1, y1, x1 + 1 / 3, y1 + 1 / 3], dim=-1).expand(n_images, -1, -1)
    counts = torch.tensor([9, 6, 4, 9])
    with torch.no_grad():
        t0 = time.perf_counter()
        images = model.encode_image(features, boxes, counts)
        t1 = time.perf_counter()
        texts = model.encode_text(tokens.ids, tokens.lengths)
        t2 = time.perf_counter()
        scores = model.score(images, texts)
    console.print(
        f"encoded {n_images} images (grid regions) in {1e3 * (t1 - t0):.1f} ms without any text, "
        f"{len(QUERIES)} sentences in {1e3 * (t2 - t1):.1f} ms without any image"
    )
    table = Table(title="MrSw scores (rows: sentences, columns: images)")
    table.add_column("sentence")
    for i in range(n_images):
        table.add_column(f"img {i}", justify="right")
    for j, sentence in enumerate(QUERIES):
        table.add_row(sentence, *(f"{scores[i, j]:.3f}" for i in range(n_images)))
    console.print(table)
    best = int(scores[:, 0].argmax())
    cells = pair_alignment(images.item(best), texts.item(0))
    words = tokens.tokens[0][1 : 1 + cells.shape[1]]
    explain = Table(title=f"why image {best} for {QUERIES[0]!r}: each word's best region")
    for column in ("word", "region", "box (x1, y1, x2, y2)", "similarity"):
        explain.add_column(column)
    for w, word in enumerate(words):
        r = int(cells[:, w].argmax())
        box = ", ".join(f"{v:.2f}" for v in boxes[best, r].tolist())
        explain.add_row(word, str(r), box, f"{cells[r, w]:.3f}")
    console.print(explain)


@app.command()
def main(
    shared: Annotated[Path, typer.Option(help="the shared folder with reference fixtures")] = Path(
        "../shared"
    ),
) -> None:
    ok = parity(shared)
    encode_and_score()
    console.print("\n[bold]Coming next[/]")
    for part, what in COMING:
        console.print(f"  {part:9s} {what}")
    if not ok:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
