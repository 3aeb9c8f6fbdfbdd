"""Evaluate a similarity matrix with the paper's protocol and write a JSON report.

`sims.npy` is [n_images, n_captions] with caption j belonging to image j // 5 (any model's
output, or a published run). With 5,000 images both COCO protocols are reported: 5K and the
mean over five 1K folds. Relevance files (TERAN's layout, float32 [n_captions, n_images]) add
NDCG@25; SPICE relevance needs Stanford CoreNLP, which this platform cannot install, so it is
read from files the user computed elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from teran.metrics import RetrievalMetrics, evaluate, evaluate_1k
from teran.relevance import Relevance

app = typer.Typer(add_completion=False)


def report(sims: np.ndarray, relevance: Relevance | None, fold_size: int = 1000) -> dict[str, Any]:
    """Full-matrix metrics, plus the 1K-fold average when the matrix splits into folds."""
    out: dict[str, Any] = {"n_images": int(sims.shape[0]), "n_captions": int(sims.shape[1])}
    full: RetrievalMetrics = evaluate(sims, relevance)
    out["full" if sims.shape[0] != 5 * fold_size else "5k"] = full.to_dict()
    if sims.shape[0] > fold_size and sims.shape[0] % fold_size == 0:
        folds = sims.shape[0] // fold_size
        out["1k"] = evaluate_1k(sims, relevance, fold_size=fold_size, n_folds=folds).to_dict()
    return out


@app.command()
def main(
    sims: Annotated[Path, typer.Argument(help=".npy similarity matrix [images, captions]")],
    out: Annotated[Path | None, typer.Option(help="JSON report path")] = None,
    rouge: Annotated[Path | None, typer.Option(help="ROUGE-L relevance file")] = None,
    spice: Annotated[Path | None, typer.Option(help="SPICE relevance file")] = None,
    fold_size: int = 1000,
) -> None:
    matrix = np.load(sims)
    files = {k: v for k, v in (("rougeL", rouge), ("spice", spice)) if v is not None}
    relevance = Relevance.load(files, matrix.shape[1]) if files else None
    result = report(matrix, relevance, fold_size)
    text = json.dumps(result, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    typer.echo(text)


if __name__ == "__main__":
    app()
