"""The exact scorer: per-pair definition, chunking, masks, and the loss's score matrix."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from teran.alignment import AlignmentMode, alignment_scores
from teran.loss import hinge_triplet_loss


def _ragged(
    n: int, max_len: int, dim: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.randint(1, max_len + 1, (n,), generator=gen)
    vectors = F.normalize(torch.randn(n, max_len, dim, generator=gen), dim=-1)
    mask = torch.arange(max_len)[None] < lengths[:, None]
    return vectors * mask[..., None], mask


def _pair_score(regions: torch.Tensor, words: torch.Tensor, mode: AlignmentMode) -> float:
    """One pair, no padding: the definition from the paper."""
    cells = regions @ words.t()  # R x W
    mrsw = cells.max(dim=0).values.sum()
    mwsr = cells.max(dim=1).values.sum()
    return float(
        {
            AlignmentMode.MrSw: mrsw,
            AlignmentMode.MwSr: mwsr,
            AlignmentMode.symm: mrsw + mwsr,
            AlignmentMode.MrAVGw: mrsw / words.shape[0],
        }[mode]
    )


@pytest.mark.parametrize("mode", list(AlignmentMode))
def test_scores_equal_per_pair_definition(mode: AlignmentMode) -> None:
    gen = torch.Generator().manual_seed(1)
    regions, r_mask = _ragged(7, 9, 16, gen)
    words, w_mask = _ragged(5, 6, 16, gen)
    scores = alignment_scores(regions, r_mask, words, w_mask, mode)
    for i in range(7):
        for c in range(5):
            expected = _pair_score(regions[i][r_mask[i]], words[c][w_mask[c]], mode)
            assert scores[i, c].item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("mode", list(AlignmentMode))
def test_chunking_does_not_change_scores(mode: AlignmentMode) -> None:
    gen = torch.Generator().manual_seed(2)
    regions, r_mask = _ragged(23, 8, 12, gen)
    words, w_mask = _ragged(31, 7, 12, gen)
    whole = alignment_scores(regions, r_mask, words, w_mask, mode)
    for max_cells in (1, 56, 56 * 5, 56 * 40):
        chunked = alignment_scores(regions, r_mask, words, w_mask, mode, max_cells=max_cells)
        torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


def test_padding_does_not_change_scores() -> None:
    gen = torch.Generator().manual_seed(3)
    regions, r_mask = _ragged(4, 5, 8, gen)
    words, w_mask = _ragged(3, 4, 8, gen)
    base = alignment_scores(regions, r_mask, words, w_mask, "symm")
    padded = alignment_scores(
        F.pad(regions, (0, 0, 0, 6), value=0.5),
        F.pad(r_mask, (0, 6)),
        F.pad(words, (0, 0, 0, 9), value=-0.5),
        F.pad(w_mask, (0, 9)),
        "symm",
    )
    torch.testing.assert_close(padded, base, rtol=0, atol=1e-6)


def test_negative_alignments_are_not_clamped_at_zero() -> None:
    regions = torch.tensor([[[1.0, 0.0]]])
    words = torch.tensor([[[-1.0, 0.0], [0.0, 0.0]]])
    scores = alignment_scores(regions, torch.tensor([[True]]), words, torch.tensor([[True, False]]))
    assert scores.item() == pytest.approx(-1.0)


def test_sentence_without_aligned_words_scores_zero() -> None:
    regions = F.normalize(torch.randn(2, 3, 4), dim=-1)
    words = F.normalize(torch.randn(1, 2, 4), dim=-1)
    no_words = torch.zeros(1, 2, dtype=torch.bool)
    for mode in AlignmentMode:
        scores = alignment_scores(
            regions, torch.ones(2, 3, dtype=torch.bool), words, no_words, mode
        )
        assert torch.equal(scores, torch.zeros(2, 1)), mode


def test_width_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="width"):
        alignment_scores(
            torch.zeros(1, 2, 4),
            torch.ones(1, 2).bool(),
            torch.zeros(1, 2, 5),
            torch.ones(1, 2).bool(),
        )


def test_hinge_loss_hardest_negative_by_hand() -> None:
    scores = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.5, 0.6], [0.3, 0.4, 0.7]])
    # image queries: hardest negative per row; caption queries: per column
    rows = [max(0.0, 0.2 + 0.8 - 0.9), max(0.0, 0.2 + 0.6 - 0.5), max(0.0, 0.2 + 0.4 - 0.7)]
    cols = [max(0.0, 0.2 + 0.3 - 0.9), max(0.0, 0.2 + 0.8 - 0.5), max(0.0, 0.2 + 0.6 - 0.7)]
    assert hinge_triplet_loss(scores).item() == pytest.approx(sum(rows) + sum(cols))
    all_negatives = hinge_triplet_loss(scores, max_violation=False).item()
    assert all_negatives > hinge_triplet_loss(scores).item()


def test_scores_are_differentiable() -> None:
    gen = torch.Generator().manual_seed(4)
    regions, r_mask = _ragged(3, 4, 8, gen)
    words, w_mask = _ragged(3, 5, 8, gen)
    regions.requires_grad_(True)
    loss = hinge_triplet_loss(alignment_scores(regions, r_mask, words, w_mask))
    loss.backward()
    assert regions.grad is not None
    assert torch.isfinite(regions.grad).all()
    assert regions.grad.abs().sum() > 0
