"""Graded relevance and NDCG@25 for retrieval beyond the single ground-truth match.

Recall@K only credits a query's own image or captions, although many other items in COCO or
Flickr30k describe the same scene. TERAN (Messina et al., ACM TOMM 2021, Sec. 5.2) therefore
also reports NDCG@25, with the relevance of a caption to an image taken as a caption-similarity
score (ROUGE-L or SPICE) between that caption and the image's five ground-truth captions.

Relevance matrices have shape ``[n_captions, n_images]``: ``rel[q, j]`` scores caption ``q``
against the captions of image ``j`` (including ``q`` itself when ``j`` is its own image, as in
the reference). They are stored as raw float32 buffers in TERAN's layout so that published
files (notably SPICE, whose Java/CoreNLP pipeline is not available on this platform) can be
used as they are.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from numpy.typing import ArrayLike, NDArray
from rouge_score import rouge_scorer, tokenizers

ROUGE_BETA = 1.2
"""Recall weight of coco-caption's ROUGE-L F-score (the value TERAN's relevance used)."""
NDCG_RANK = 25
"""Ranking depth of TERAN's NDCG."""
RELEVANCE_METHODS = ("rougeL", "spice")
"""Relevance names the evaluation reports (``DirectionMetrics.ndcg_<name>``)."""

_CHUNK_CELLS = 1 << 24


class _CachingTokenizer(tokenizers.Tokenizer):
    """rouge-score's default tokenizer, memoised: each caption is scored against every other."""

    def __init__(self) -> None:
        self._inner = tokenizers.DefaultTokenizer(use_stemmer=False)
        self._cache: dict[str, list[str]] = {}

    def tokenize(self, text: str) -> list[str]:
        tokens = self._cache.get(text)
        if tokens is None:
            tokens = self._cache[text] = list(self._inner.tokenize(text))
        return tokens


def make_rouge_scorer() -> rouge_scorer.RougeScorer:
    """A ROUGE-L scorer with rouge-score's tokenisation (lower-cased alphanumeric tokens)."""
    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_CachingTokenizer())


def _combine(prec_max: float, rec_max: float, beta: float) -> float:
    if prec_max == 0 or rec_max == 0:
        return 0.0
    return ((1 + beta**2) * prec_max * rec_max) / (rec_max + beta**2 * prec_max)


def rouge_l(
    candidate: str,
    references: Sequence[str],
    scorer: rouge_scorer.RougeScorer | None = None,
    beta: float = ROUGE_BETA,
) -> float:
    """coco-caption's multi-reference ROUGE-L of ``candidate`` against ``references``.

    Per reference, LCS precision (``lcs / len(candidate)``) and recall (``lcs / len(reference)``)
    come from rouge-score; their maxima over references, taken separately, are combined into
    ``(1 + beta^2) P R / (R + beta^2 P)`` (0 if either is 0), as coco-caption's ``Rouge`` does.

    Tokens are rouge-score's (lower case, runs of ``[a-z0-9]``), whereas TERAN's scorer split
    lower-cased text on spaces, keeping punctuation attached; scores can differ slightly from
    published relevance files where captions carry punctuation.
    """
    if not references:
        raise ValueError("rouge_l needs at least one reference")
    scorer = scorer or make_rouge_scorer()
    prec_max = 0.0
    rec_max = 0.0
    for reference in references:
        score = scorer.score(reference, candidate)["rougeL"]
        prec_max = max(prec_max, float(score.precision))
        rec_max = max(rec_max, float(score.recall))
    return _combine(prec_max, rec_max, beta)


def compute_rouge_relevance(
    captions: Sequence[str],
    captions_per_image: int = 5,
    progress: bool = False,
    beta: float = ROUGE_BETA,
) -> NDArray[np.float32]:
    """ROUGE-L relevance ``[n_captions, n_images]`` of every caption to every image.

    ``captions`` are in image order (caption ``q`` belongs to image ``q // captions_per_image``).
    The values are those of :func:`rouge_l` (rouge-score's tokens, coco-caption's combination);
    the ``n_captions^2`` LCS lengths are computed with the bit-parallel LCS of Hyyro (2004):
    one query against all references at once, so a 5,000-caption set takes seconds, not hours.
    Keep the result with :func:`save_relevance` all the same.
    """
    n_captions = len(captions)
    if n_captions == 0 or n_captions % captions_per_image:
        raise ValueError(
            f"{n_captions} captions cannot be split into images of {captions_per_image} captions"
        )
    n_images = n_captions // captions_per_image
    tokenizer = _CachingTokenizer()
    tokens = [tokenizer.tokenize(c) for c in captions]
    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(t, len(vocab)) for t in toks] for toks in tokens]
    ref_len = np.array([len(t) for t in ids], dtype=np.float64)
    width = max(1, int(ref_len.max()))
    refs = np.full((n_captions, width), -1, dtype=np.int64)
    for r, row in enumerate(ids):
        refs[r, : len(row)] = row
    rel = np.empty((n_captions, n_images), dtype=np.float32)
    report_every = max(1, n_captions // 100)
    for q, query in enumerate(ids):
        lcs = _lcs_against_all(query, refs, len(vocab))
        with np.errstate(divide="ignore", invalid="ignore"):
            prec = lcs / len(query) if query else np.zeros(n_captions)
            rec = np.where(ref_len > 0, lcs / np.maximum(ref_len, 1), 0.0)
        p = prec.reshape(n_images, captions_per_image).max(axis=1)
        c = rec.reshape(n_images, captions_per_image).max(axis=1)
        denom = c + beta**2 * p
        valid = (p != 0) & (c != 0)
        rel[q] = np.where(valid, (1 + beta**2) * p * c / np.where(valid, denom, 1.0), 0.0)
        if progress and ((q + 1) % report_every == 0 or q + 1 == n_captions):
            print(f"rougeL relevance: {q + 1}/{n_captions} captions", file=sys.stderr)
    return rel


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def _lcs_against_all(
    query: Sequence[int], refs: NDArray[np.int64], vocab: int
) -> NDArray[np.float64]:
    """LCS length of ``query`` with every row of ``refs`` (-1 padded), in 64-token blocks.

    Bit-parallel LCS: bit i of the state stands for query position i; each reference token
    updates the state of all references at once with one add, and the LCS is the number of
    cleared bits at the end. Queries longer than 64 tokens are cut into 64-token blocks whose
    states are chained through the carry, as in the multi-word version of the algorithm.
    """
    n = len(query)
    if n == 0:
        return np.zeros(len(refs))
    blocks = (n + 63) // 64
    masks = np.zeros((blocks, vocab + 1), dtype=np.uint64)  # index `vocab` = padding: no match
    for i, token in enumerate(query):
        masks[i // 64, token] |= np.uint64(1) << np.uint64(i % 64)
    lookup = np.where(refs < 0, vocab, refs)
    state = np.full((blocks, len(refs)), np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    last_bits = n - 64 * (blocks - 1)
    top = np.uint64(0xFFFFFFFFFFFFFFFF >> (64 - last_bits))
    state[-1] &= top
    with np.errstate(over="ignore"):
        for j in range(refs.shape[1]):
            carry = np.zeros(len(refs), dtype=np.uint64)
            for b in range(blocks):
                match = masks[b, lookup[:, j]]
                u = state[b] & match
                total = state[b] + u + carry
                carry = ((total < state[b]) | ((total == state[b]) & (carry > 0))).astype(np.uint64)
                state[b] = total | (state[b] - u)
            state[-1] &= top
    cleared = 0
    for b in range(blocks):
        bits = np.uint64(0xFFFFFFFFFFFFFFFF) if b < blocks - 1 else top
        ones = _POPCOUNT8[(state[b] & bits).view(np.uint8).reshape(-1, 8)].sum(axis=1)
        cleared = cleared + (int(bin(int(bits)).count("1")) - ones)
    return np.asarray(cleared, dtype=np.float64)


def save_relevance(path: str | os.PathLike[str], rel: ArrayLike) -> None:
    """Write ``rel`` as TERAN does: a raw C-order float32 buffer, no header.

    TERAN names these files ``<dataset>-<split>-<method>.npy`` although ``np.load`` cannot read
    them; use :func:`load_relevance`.
    """
    array = np.ascontiguousarray(rel, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"relevance must be 2-D [n_captions, n_images], got {array.shape}")
    array.tofile(os.fspath(path))


def load_relevance(path: str | os.PathLike[str], n_captions: int) -> NDArray[np.float32]:
    """Memory-map a TERAN relevance file as ``[n_captions, n_images]`` (read-only)."""
    data = np.memmap(os.fspath(path), dtype=np.float32, mode="r")
    if n_captions <= 0 or data.size % n_captions:
        raise ValueError(f"{path}: {data.size} values do not form a matrix with {n_captions} rows")
    return data.reshape(n_captions, -1)


def dcg_from_ranking(relevance: ArrayLike, ranking: ArrayLike) -> float:
    """DCG of ``ranking`` (item indices, best first): gains ``2^rel - 1``, discount log2(pos+2)."""
    gains = np.exp2(np.asarray(relevance, dtype=np.float64)[np.asarray(ranking)]) - 1
    return float(np.sum(gains / np.log2(np.arange(gains.size) + 2)))


def ndcg_from_ranking(relevance: ArrayLike, ranking: ArrayLike) -> float:
    """NDCG of ``ranking`` with depth ``len(ranking)``, as TERAN's ``dcg.ndcg_from_ranking``.

    The ideal DCG uses the ``len(ranking)`` largest relevances; a query whose ideal DCG is 0
    scores 0.
    """
    rel = np.asarray(relevance, dtype=np.float64)
    k = np.asarray(ranking).size
    best = dcg_from_ranking(rel, np.argsort(rel)[::-1][:k])
    if best == 0:
        return 0.0
    return dcg_from_ranking(rel, ranking) / best


def ndcg_per_query(relevance: ArrayLike, rankings: ArrayLike) -> NDArray[np.float64]:
    """NDCG of each query: ``relevance[q]`` scores all items, ``rankings[q]`` its top-k items.

    Equals :func:`ndcg_from_ranking` row by row, computed in chunks of queries.
    """
    rel_all = np.asarray(relevance)
    ranks_all = np.asarray(rankings)
    if rel_all.ndim != 2 or ranks_all.ndim != 2 or rel_all.shape[0] != ranks_all.shape[0]:
        raise ValueError(
            f"relevance {rel_all.shape} and rankings {ranks_all.shape} must be 2-D with one row "
            "per query"
        )
    n_queries, n_items = rel_all.shape
    k = ranks_all.shape[1]
    if not 0 < k <= n_items:
        raise ValueError(f"ranking depth {k} must be in 1..{n_items}")
    discounts = 1.0 / np.log2(np.arange(k) + 2)
    out = np.empty(n_queries, dtype=np.float64)
    step = max(1, _CHUNK_CELLS // n_items)
    for start in range(0, n_queries, step):
        rel = np.array(rel_all[start : start + step], dtype=np.float64)
        ranking = ranks_all[start : start + step]
        dcg = (np.exp2(np.take_along_axis(rel, ranking, axis=1)) - 1) @ discounts
        top = -np.sort(-np.partition(rel, n_items - k, axis=1)[:, n_items - k :], axis=1)
        ideal = (np.exp2(top) - 1) @ discounts
        out[start : start + step] = np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal != 0)
    return out


def mean_ndcg(ndcgs: NDArray[np.float64]) -> float:
    """Average of the non-zero NDCGs, TERAN's ``np.mean(ndcgs[ndcgs != 0])``.

    Queries with NDCG 0 (e.g. no relevant item anywhere) are left out of the average, as in the
    reference. When every query scores 0 the reference's mean is NaN; this returns 0.0.
    """
    nonzero = ndcgs[ndcgs != 0]
    return float(nonzero.mean()) if nonzero.size else 0.0


@dataclass(frozen=True, eq=False)
class Relevance:
    """Named relevance matrices, each ``[n_captions, n_images]``, e.g. ``{"rougeL": rel}``."""

    matrices: Mapping[str, NDArray[np.floating]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.matrices) - set(RELEVANCE_METHODS))
        if unknown:
            raise ValueError(f"unknown relevance names {unknown}; known: {RELEVANCE_METHODS}")
        shapes = {name: np.shape(m) for name, m in self.matrices.items()}
        if any(len(s) != 2 for s in shapes.values()) or len(set(shapes.values())) > 1:
            raise ValueError(f"relevance matrices must be 2-D and of one shape, got {shapes}")
        object.__setattr__(self, "matrices", MappingProxyType(dict(self.matrices)))

    @classmethod
    def load(cls, paths: Mapping[str, str | os.PathLike[str]], n_captions: int) -> Relevance:
        """Memory-map TERAN relevance files, e.g. ``{"rougeL": ..., "spice": ...}``."""
        return cls({name: load_relevance(p, n_captions) for name, p in paths.items()})

    def check_shape(self, n_captions: int, n_images: int) -> None:
        """Raise ValueError unless every matrix is ``[n_captions, n_images]``."""
        for name, m in self.matrices.items():
            if np.shape(m) != (n_captions, n_images):
                raise ValueError(
                    f"relevance {name!r} has shape {np.shape(m)}, the similarity matrix needs "
                    f"({n_captions}, {n_images})"
                )

    def fold(self, start_image: int, stop_image: int, captions_per_image: int = 5) -> Relevance:
        """The block for images ``[start_image, stop_image)`` and their captions."""
        rows = slice(start_image * captions_per_image, stop_image * captions_per_image)
        cols = slice(start_image, stop_image)
        return Relevance({name: m[rows, cols] for name, m in self.matrices.items()})
