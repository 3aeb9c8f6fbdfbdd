"""Encode a test set with a model and evaluate it with the paper's protocol.

Images and captions are encoded separately (as a service would) and scored with the exact
scorer, so the metrics are those of the served system, not of a batch-padded approximation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from teran.data.base import RegionCaptions
from teran.data.pairs import pad_regions
from teran.embeddings import ImageEmbedding, TextEmbedding
from teran.metrics import RetrievalMetrics, evaluate, evaluate_1k
from teran.model import Teran
from teran.relevance import Relevance
from teran.tokenizer import SentenceTokenizer


def _stack_ragged(
    chunks: list[torch.Tensor], lengths: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(c.shape[1] for c in chunks)
    padded = [torch.nn.functional.pad(c, (0, 0, 0, width - c.shape[1])) for c in chunks]
    return torch.cat(padded), torch.cat(lengths)


@torch.no_grad()
def encode_images(
    model: Teran, source: RegionCaptions, batch_size: int = 64, progress: bool = False
) -> ImageEmbedding:
    device = next(model.parameters()).device
    slots, lengths = [], []
    for start in tqdm(range(0, len(source), batch_size), disable=not progress, desc="images"):
        regions = [source.regions(i) for i in range(start, min(len(source), start + batch_size))]
        feats, boxes, counts = pad_regions(
            [r.features for r in regions], [r.boxes for r in regions]
        )
        emb = model.encode_image(feats.to(device), boxes.to(device), counts.to(device))
        slots.append(emb.slots.cpu())
        lengths.append(emb.lengths.cpu())
    s, n = _stack_ragged(slots, lengths)
    return ImageEmbedding(slots=s, lengths=n)


@torch.no_grad()
def encode_sentences(
    model: Teran,
    tokenizer: SentenceTokenizer,
    sentences: list[str],
    batch_size: int = 128,
    progress: bool = False,
) -> TextEmbedding:
    device = next(model.parameters()).device
    tokens, lengths = [], []
    for start in tqdm(range(0, len(sentences), batch_size), disable=not progress, desc="captions"):
        batch = tokenizer(sentences[start : start + batch_size], truncate=True)
        emb = model.encode_text(batch.ids.to(device), batch.lengths.to(device))
        tokens.append(emb.tokens.cpu())
        lengths.append(emb.lengths.cpu())
    t, n = _stack_ragged(tokens, lengths)
    return TextEmbedding(tokens=t, lengths=n)


@dataclass
class EvalResult:
    sims: np.ndarray
    metrics: RetrievalMetrics
    metrics_1k: RetrievalMetrics | None
    fold_size: int = 1000

    def to_dict(self) -> dict[str, Any]:
        """Full-matrix metrics (named "5k" on a COCO 5K-sized set), plus the 1K-fold average."""
        n_images, n_captions = self.sims.shape
        out: dict[str, Any] = {"n_images": int(n_images), "n_captions": int(n_captions)}
        out["5k" if n_images == 5 * self.fold_size else "full"] = self.metrics.to_dict()
        if self.metrics_1k is not None:
            out["1k"] = self.metrics_1k.to_dict()
        return out


def evaluate_sims(
    sims: np.ndarray, relevance: Relevance | None = None, fold_size: int = 1000
) -> EvalResult:
    """Metrics of a similarity matrix: the whole of it, plus the average over `fold_size`-image
    folds when it splits into more than one."""
    n = sims.shape[0]
    folds = n // fold_size if n > fold_size and n % fold_size == 0 else 0
    return EvalResult(
        sims=sims,
        metrics=evaluate(sims, relevance),
        metrics_1k=(
            evaluate_1k(sims, relevance, fold_size=fold_size, n_folds=folds) if folds else None
        ),
        fold_size=fold_size,
    )


@torch.no_grad()
def evaluate_model(
    model: Teran,
    tokenizer: SentenceTokenizer,
    source: RegionCaptions,
    measure: str | None = None,
    captions_per_image: int = 5,
    relevance: Relevance | None = None,
    fold_size: int = 1000,
    progress: bool = False,
) -> EvalResult:
    """Metrics of `model` on `source` (full set, plus the 1K-fold average on larger sets)."""
    was_training = model.training
    model.eval()
    try:
        images = encode_images(model, source, progress=progress)
        captions = [c for i in range(len(source)) for c in source.captions(i)[:captions_per_image]]
        texts = encode_sentences(model, tokenizer, captions, progress=progress)
        sims = model.score(images, texts, measure).numpy()
    finally:
        model.train(was_training)
    return evaluate_sims(sims, relevance, fold_size)
