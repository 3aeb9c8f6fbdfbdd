"""Evaluate with the paper's protocol and write a JSON report.

`checkpoint`: encode a test split with a checkpoint and evaluate it. `sims`: evaluate a
precomputed [n_images, n_captions] matrix (caption j belongs to image j // 5), e.g. a
published run. With 5,000 images both COCO protocols are reported: 5K and the mean over five
1K folds. Relevance files (TERAN's layout, float32 [n_captions, n_images]) add
NDCG@25; SPICE relevance needs Stanford CoreNLP, which this platform cannot install, so it is
read from files the user computed elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from teran.checkpoint import load_checkpoint
from teran.config import TeranCfg
from teran.data.base import RegionCaptions
from teran.data.bottomup import BottomUpFeatures
from teran.data.cache import RegionCache
from teran.data.folder import from_path
from teran.data.synthetic import SyntheticScenes
from teran.evaluation import evaluate_model, evaluate_sims
from teran.pointing import evaluate_pointing, synthetic_targets
from teran.relevance import Relevance
from trainer.data import cached_regions, synthetic_split

app = typer.Typer(add_completion=False)


@app.command("sims")
def sims_command(
    sims: Annotated[Path, typer.Argument(help=".npy similarity matrix [images, captions]")],
    out: Annotated[Path | None, typer.Option(help="JSON report path")] = None,
    rouge: Annotated[Path | None, typer.Option(help="ROUGE-L relevance file")] = None,
    spice: Annotated[Path | None, typer.Option(help="SPICE relevance file")] = None,
    fold_size: int = 1000,
) -> None:
    matrix = np.load(sims)
    relevance = _relevance(rouge, spice, matrix.shape[1])
    _write(evaluate_sims(matrix, relevance, fold_size).to_dict(), out)


@app.command("checkpoint")
def checkpoint_command(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint folder (this project's format)")],
    dataset: Annotated[str, typer.Option(help="coco, f30k, folder or synthetic")] = "coco",
    data: Annotated[str | None, typer.Option(help="data root, or captions file for folder")] = None,
    split: str = "test",
    features_root: str | None = None,
    measure: Annotated[str | None, typer.Option(help="default: the model's alignment")] = None,
    synthetic_images: int = 1000,
    synthetic_seed: Annotated[
        int, typer.Option(help="synthetic test scenes to draw (the benchmark uses 0)")
    ] = 0,
    cache_dir: str = ".cache/teran",
    out: Annotated[Path | None, typer.Option(help="JSON report path")] = None,
    rouge: Annotated[Path | None, typer.Option(help="ROUGE-L relevance file")] = None,
    spice: Annotated[Path | None, typer.Option(help="SPICE relevance file")] = None,
    fold_size: int = 1000,
    device: str = "cpu",
) -> None:
    model, tokenizer = load_checkpoint(checkpoint)
    model.to(device)
    source = test_source(
        model.cfg,
        dataset,
        data,
        split,
        features_root,
        synthetic_images,
        cache_dir,
        synthetic_seed,
    )
    relevance = _relevance(rouge, spice, 5 * len(source))
    result = evaluate_model(
        model, tokenizer, source, measure, relevance=relevance, fold_size=fold_size, progress=True
    )
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "dataset": dataset, "split": split}
    if dataset == "synthetic":
        assert isinstance(source, RegionCache) and isinstance(source.source, SyntheticScenes)
        report["synthetic_seed"] = synthetic_seed
        targets = synthetic_targets(source.source)
        report["pointing"] = evaluate_pointing(model, tokenizer, source, targets).to_dict()
    _write({**report, **result.to_dict()}, out)


def test_source(
    cfg: TeranCfg,
    dataset: str,
    data: str | None,
    split: str,
    features_root: str | None,
    synthetic_images: int,
    cache_dir: str,
    synthetic_seed: int = 0,
) -> RegionCaptions:
    """The evaluation split of any supported source."""
    if dataset == "synthetic":
        return synthetic_split(
            split, synthetic_images, synthetic_seed, cfg, cache_dir, progress=True
        )
    if data is None:
        raise typer.BadParameter(f"--data is required for --dataset {dataset}")
    if dataset in ("coco", "f30k"):
        build = BottomUpFeatures.coco if dataset == "coco" else BottomUpFeatures.f30k
        return build(data, split, features_root=features_root)
    if dataset == "folder":
        return cached_regions(from_path(data), cfg, cache_dir, f"folder-{Path(data).stem}")
    raise typer.BadParameter(f"unknown dataset {dataset!r}")


def _relevance(rouge: Path | None, spice: Path | None, n_captions: int) -> Relevance | None:
    files = {k: v for k, v in (("rougeL", rouge), ("spice", spice)) if v is not None}
    return Relevance.load(files, n_captions) if files else None


def _write(result: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(result, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    typer.echo(text)


if __name__ == "__main__":
    app()
