"""Image-sentence retrieval metrics over a precomputed similarity matrix.

Scoring is kept apart from the model so that any run's similarity matrix (or a published one)
can be re-evaluated with exactly the protocol TERAN reports (Messina et al., ACM TOMM 2021,
Sec. 5): Recall@{1,5,10}, median and mean rank, their rsum, and NDCG@25 with ROUGE-L / SPICE
relevance; COCO is reported on the 5K test set and averaged over five 1K folds.

``sims[i, j]`` scores image ``i`` against caption ``j``; caption ``j`` belongs to image ``j // 5``.

Ranks are 0-based positions in a stable descending sort: an item's position is the number of
items with a strictly greater score plus the number of equal-scored items with a smaller index.
The reference (``argsort(d)[::-1]``) orders ties the other way, so results can differ only
where scores tie exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from teran.relevance import NDCG_RANK, Relevance, mean_ndcg, ndcg_per_query

CAPTIONS_PER_IMAGE = 5
RECALL_KS = (1, 5, 10)

_CHUNK_CELLS = 1 << 24
"""Largest comparison / sort block built at once (elements)."""


@dataclass(frozen=True)
class DirectionMetrics:
    """Metrics of one retrieval direction: recalls in percent, ranks 1-based."""

    r1: float
    r5: float
    r10: float
    medr: float
    meanr: float
    ndcg_rougeL: float | None = None
    ndcg_spice: float | None = None

    @property
    def rsum(self) -> float:
        return self.r1 + self.r5 + self.r10

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass(frozen=True)
class RetrievalMetrics:
    """Both directions; ``rsum`` is the sum of the six recalls."""

    i2t: DirectionMetrics
    t2i: DirectionMetrics
    rsum: float

    def to_dict(self) -> dict[str, object]:
        return {"i2t": self.i2t.to_dict(), "t2i": self.t2i.to_dict(), "rsum": self.rsum}


def _check_sims(sims: ArrayLike) -> NDArray[np.floating]:
    array = np.asarray(sims)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(
            f"sims must be a non-empty 2-D [n_images, n_captions] matrix, got shape {array.shape}"
        )
    n_images, n_captions = array.shape
    if n_captions != CAPTIONS_PER_IMAGE * n_images:
        raise ValueError(
            f"sims has {n_images} images and {n_captions} captions; the protocol needs "
            f"{CAPTIONS_PER_IMAGE} captions per image ({CAPTIONS_PER_IMAGE * n_images} columns)"
        )
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError("sims contains NaN or infinite scores")
    return array


def _positions(scores: NDArray[np.floating], targets: NDArray[np.intp]) -> NDArray[np.int64]:
    """0-based position of ``targets[q, t]`` in row ``q`` of ``scores``, stable descending."""
    n_rows, n_items = scores.shape
    n_targets = targets.shape[1]
    index = np.arange(n_items)
    out = np.empty(targets.shape, dtype=np.int64)
    step = max(1, _CHUNK_CELLS // (n_items * n_targets))
    for start in range(0, n_rows, step):
        block = np.ascontiguousarray(scores[start : start + step])[:, None, :]
        target = targets[start : start + step]
        value = np.take_along_axis(block[:, 0, :], target, axis=1)[..., None]
        greater = (block > value).sum(axis=-1)
        tied_before = ((block == value) & (index < target[..., None])).sum(axis=-1)
        out[start : start + step] = greater + tied_before
    return out


def _top_k(scores: NDArray[np.floating], k: int) -> NDArray[np.intp]:
    """Indices of the ``k`` best items of each row, in the same order as ranks use."""
    n_rows, n_items = scores.shape
    out = np.empty((n_rows, k), dtype=np.intp)
    step = max(1, _CHUNK_CELLS // n_items)
    for start in range(0, n_rows, step):
        block = np.ascontiguousarray(scores[start : start + step])
        out[start : start + step] = np.argsort(-block, axis=1, kind="stable")[:, :k]
    return out


def i2t_ranks(sims: ArrayLike) -> NDArray[np.int64]:
    """Per image: best 0-based position among its captions when ranking all captions."""
    array = _check_sims(sims)
    n_images = array.shape[0]
    own = np.arange(n_images)[:, None] * CAPTIONS_PER_IMAGE + np.arange(CAPTIONS_PER_IMAGE)
    return _positions(array, own).min(axis=1)


def t2i_ranks(sims: ArrayLike) -> NDArray[np.int64]:
    """Per caption: 0-based position of its image when ranking all images."""
    array = _check_sims(sims)
    own = (np.arange(array.shape[1]) // CAPTIONS_PER_IMAGE)[:, None]
    return _positions(array.T, own)[:, 0]


def rank_metrics(ranks: ArrayLike) -> DirectionMetrics:
    """R@1/5/10 (percent), ``floor(median) + 1`` and ``mean + 1`` of 0-based ranks."""
    r = np.asarray(ranks)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array, got shape {r.shape}")
    r1, r5, r10 = (100.0 * float(np.count_nonzero(r < k)) / r.size for k in RECALL_KS)
    return DirectionMetrics(
        r1=r1,
        r5=r5,
        r10=r10,
        medr=float(math.floor(float(np.median(r)))) + 1.0,
        meanr=float(r.mean()) + 1.0,
    )


def evaluate(sims: ArrayLike, relevance: Relevance | None = None) -> RetrievalMetrics:
    """All metrics of one similarity matrix ``[n_images, 5 * n_images]``.

    With ``relevance`` (matrices ``[n_captions, n_images]`` matching ``sims``), NDCG@25 is
    computed per query and averaged over the non-zero values, as TERAN does: an image query's
    relevance vector is ``rel[:, i]`` over captions, a caption query's is ``rel[q, :]``.
    """
    array = _check_sims(sims)
    i2t = rank_metrics(i2t_ranks(array))
    t2i = rank_metrics(t2i_ranks(array))
    if relevance is not None and relevance.matrices:
        n_images, n_captions = array.shape
        relevance.check_shape(n_captions, n_images)
        i2t_top = _top_k(array, min(NDCG_RANK, n_captions))
        t2i_top = _top_k(array.T, min(NDCG_RANK, n_images))
        i2t_ndcg: dict[str, float] = {}
        t2i_ndcg: dict[str, float] = {}
        for name, rel in relevance.matrices.items():
            i2t_ndcg[f"ndcg_{name}"] = mean_ndcg(ndcg_per_query(rel.T, i2t_top))
            t2i_ndcg[f"ndcg_{name}"] = mean_ndcg(ndcg_per_query(rel, t2i_top))
        i2t = replace(i2t, **i2t_ndcg)
        t2i = replace(t2i, **t2i_ndcg)
    return RetrievalMetrics(i2t=i2t, t2i=t2i, rsum=i2t.rsum + t2i.rsum)


def _mean_optional(column: Sequence[float | None], name: str) -> float | None:
    if all(v is None for v in column):
        return None
    if any(v is None for v in column):
        raise ValueError(f"{name} is missing in some of the results being averaged")
    return float(np.mean([v for v in column if v is not None]))


def _mean_direction(results: Sequence[DirectionMetrics]) -> DirectionMetrics:
    return DirectionMetrics(
        r1=float(np.mean([m.r1 for m in results])),
        r5=float(np.mean([m.r5 for m in results])),
        r10=float(np.mean([m.r10 for m in results])),
        medr=float(np.mean([m.medr for m in results])),
        meanr=float(np.mean([m.meanr for m in results])),
        ndcg_rougeL=_mean_optional([m.ndcg_rougeL for m in results], "ndcg_rougeL"),
        ndcg_spice=_mean_optional([m.ndcg_spice for m in results], "ndcg_spice"),
    )


def average_metrics(results: Sequence[RetrievalMetrics]) -> RetrievalMetrics:
    """Mean of every metric (medr and meanr included) across folds, as TERAN's 1K protocol."""
    if not results:
        raise ValueError("no results to average")
    return RetrievalMetrics(
        i2t=_mean_direction([m.i2t for m in results]),
        t2i=_mean_direction([m.t2i for m in results]),
        rsum=float(np.mean([m.rsum for m in results])),
    )


def evaluate_5k(sims: ArrayLike, relevance: Relevance | None = None) -> RetrievalMetrics:
    """COCO 5K protocol: the whole test matrix at once."""
    return evaluate(sims, relevance)


def evaluate_1k(
    sims: ArrayLike,
    relevance: Relevance | None = None,
    *,
    fold_size: int = 1000,
    n_folds: int = 5,
) -> RetrievalMetrics:
    """COCO 1K protocol: ``n_folds`` disjoint blocks of ``fold_size`` images, metrics averaged.

    Fold ``f`` holds image rows ``[fold_size*f, fold_size*(f+1))`` and their caption columns;
    ``relevance`` (for the whole matrix) is cut the same way.
    """
    array = _check_sims(sims)
    if fold_size <= 0 or n_folds <= 0:
        raise ValueError(f"fold_size ({fold_size}) and n_folds ({n_folds}) must be positive")
    n_images = array.shape[0]
    if n_images != fold_size * n_folds:
        raise ValueError(
            f"sims has {n_images} images; {n_folds} folds of {fold_size} need {fold_size * n_folds}"
        )
    if relevance is not None:
        relevance.check_shape(array.shape[1], n_images)
    results = []
    for f in range(n_folds):
        lo, hi = f * fold_size, (f + 1) * fold_size
        block = array[lo:hi, lo * CAPTIONS_PER_IMAGE : hi * CAPTIONS_PER_IMAGE]
        fold_relevance = None if relevance is None else relevance.fold(lo, hi, CAPTIONS_PER_IMAGE)
        results.append(evaluate(block, fold_relevance))
    return average_metrics(results)
