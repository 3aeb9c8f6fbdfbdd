"""TERAN's fine-grained alignment scores between region sets and word sets.

A pair's score is computed from its own valid regions and words only, so it never depends on
padding or on what else is in the batch. (The reference implementation zero-fills padded cells
before taking maxima, which clamps a max at 0 when the other side is padded; the reference
fixtures' per-pair scores are the definition matched here.)

All pairs are scored with one GEMM per chunk: regions of a chunk of images against words of a
chunk of captions, then masked max and sum. Chunks keep the alignment tensor under a fixed
number of cells, so memory stays bounded for any collection size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from teran.config import AlignmentMode

DEFAULT_MAX_CELLS = 1 << 25
"""Largest alignment tensor (images x regions x captions x words) built at once: 128 MiB in fp32."""


def _sum_of_max(
    cells: Tensor, max_dim: int, max_mask: Tensor, sum_dim: int, sum_mask: Tensor
) -> Tensor:
    """Max over `max_dim` among valid entries, then sum over `sum_dim` of the valid maxima.

    A side with no valid entry contributes 0 instead of -inf.
    """
    best = cells.masked_fill(~max_mask, float("-inf")).amax(dim=max_dim)
    best = best.masked_fill(~sum_mask, 0.0)
    return torch.nan_to_num(best, neginf=0.0).sum(dim=sum_dim)


def _pool(cells: Tensor, region_mask: Tensor, word_mask: Tensor, mode: AlignmentMode) -> Tensor:
    """Pool alignment cells [I, R, C, W] into pair scores [I, C]."""
    mrsw = mwsr = None
    if mode is not AlignmentMode.MwSr:
        # best region per word -> I x C x W, summed over valid words
        mrsw = _sum_of_max(cells, 1, region_mask[:, :, None, None], 2, word_mask[None, :, :])
        if mode is AlignmentMode.MrAVGw:
            return mrsw / word_mask.sum(dim=1).clamp(min=1).to(mrsw.dtype)[None, :]
    if mode is not AlignmentMode.MrSw:
        # best word per region -> I x R x C, summed over valid regions
        mwsr = _sum_of_max(cells, 3, word_mask[None, None, :, :], 1, region_mask[:, :, None])
    if mrsw is None:
        assert mwsr is not None
        return mwsr
    return mrsw if mwsr is None else mrsw + mwsr


def alignment_scores(
    regions: Tensor,
    region_mask: Tensor,
    words: Tensor,
    word_mask: Tensor,
    mode: AlignmentMode | str = AlignmentMode.MrSw,
    max_cells: int = DEFAULT_MAX_CELLS,
) -> Tensor:
    """Score every image against every caption.

    Args:
        regions: [I, R, D] region vectors (L2-normalised), padded.
        region_mask: [I, R] bool, True on valid regions.
        words: [C, W, D] word vectors (L2-normalised), padded.
        word_mask: [C, W] bool, True on valid words.
        mode: alignment pooling, see `AlignmentMode`.
        max_cells: bound on the alignment tensor built at once (chunking).

    Returns:
        [I, C] scores, differentiable; equal to scoring each pair alone.
    """
    mode = AlignmentMode(mode)
    n_img, n_reg, dim = regions.shape
    n_cap, n_word, _ = words.shape
    if words.shape[2] != dim:
        raise ValueError(f"regions have width {dim} but words have width {words.shape[2]}")
    out = regions.new_empty((n_img, n_cap))
    if n_img == 0 or n_cap == 0:
        return out
    cells_per_pair = max(1, n_reg * n_word)
    img_chunk = max(1, min(n_img, math.isqrt(max(1, max_cells // cells_per_pair))))
    cap_chunk = max(1, min(n_cap, max_cells // (cells_per_pair * img_chunk)))
    if img_chunk >= n_img and cap_chunk >= n_cap:
        return _score_block(regions, region_mask, words, word_mask, mode)
    rows = []
    for i in range(0, n_img, img_chunk):
        cols = [
            _score_block(
                regions[i : i + img_chunk],
                region_mask[i : i + img_chunk],
                words[c : c + cap_chunk],
                word_mask[c : c + cap_chunk],
                mode,
            )
            for c in range(0, n_cap, cap_chunk)
        ]
        rows.append(torch.cat(cols, dim=1))
    return torch.cat(rows, dim=0)


def _score_block(
    regions: Tensor, region_mask: Tensor, words: Tensor, word_mask: Tensor, mode: AlignmentMode
) -> Tensor:
    n_img, n_reg, dim = regions.shape
    n_cap, n_word, _ = words.shape
    cells = (regions.reshape(-1, dim) @ words.reshape(-1, dim).t()).view(
        n_img, n_reg, n_cap, n_word
    )
    return _pool(cells, region_mask.bool(), word_mask.bool(), mode)


def pair_alignment(regions: Tensor, words: Tensor) -> Tensor:
    """Region-word similarity matrix [R, W] of one pair: what an explanation shows."""
    return regions @ words.t()


GLOBAL = "global"
"""Not an alignment: cosine of the aggregated vectors (image CLS slot, sentence [CLS]), the
single-embedding matching that TERAN is compared against (VSE++-style)."""

MEASURES = (*(m.value for m in AlignmentMode), GLOBAL)


def global_scores(image_vectors: Tensor, text_vectors: Tensor) -> Tensor:
    """[I, D] x [C, D] L2-normalised vectors -> [I, C] cosine similarities."""
    return image_vectors @ text_vectors.t()
