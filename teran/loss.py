"""TERAN's training objective: hinge triplet loss on alignment scores, hardest negatives (VSE++)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from teran.alignment import MEASURES
from teran.embeddings import ImageEmbedding, TextEmbedding
from teran.model import Teran


def hinge_triplet_loss(scores: Tensor, margin: float = 0.2, max_violation: bool = True) -> Tensor:
    """Loss of a square [images, captions] score matrix whose diagonal holds the positive pairs.

    Sums, in both directions (image->caption and caption->image), the hinge `margin + s(neg) -
    s(pos)` over the hardest in-batch negative (or over every negative if not `max_violation`).
    """
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be a square matrix, got shape {tuple(scores.shape)}")
    positive = scores.diag().view(-1, 1)
    cost_caption = (margin + scores - positive).clamp(min=0)  # row: image query
    cost_image = (margin + scores - positive.t()).clamp(min=0)  # column: caption query
    eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    cost_caption = cost_caption.masked_fill(eye, 0)
    cost_image = cost_image.masked_fill(eye, 0)
    if max_violation:
        return cost_caption.max(dim=1).values.sum() + cost_image.max(dim=0).values.sum()
    return cost_caption.sum() + cost_image.sum()


class AlignmentLoss(nn.Module):
    """Scores a batch of matching pairs with the model's alignment, then the hinge loss."""

    def __init__(
        self,
        model: Teran,
        mode: str | None = None,
        margin: float = 0.2,
        max_violation: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.mode = mode or model.cfg.alignment
        if self.mode not in MEASURES:
            raise ValueError(f"mode must be one of {MEASURES}, got {self.mode!r}")
        self.margin = margin
        self.max_violation = max_violation

    def forward(self, images: ImageEmbedding, texts: TextEmbedding) -> dict[str, Tensor]:
        scores = self.model.score(images, texts, self.mode)
        loss = hinge_triplet_loss(scores, self.margin, self.max_violation)
        return {"loss": loss, "scores": scores.detach()}
