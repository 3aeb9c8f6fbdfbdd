"""TERAN's training objective: hinge triplet loss on alignment scores, hardest negatives (VSE++)."""

from __future__ import annotations

import torch
from torch import Tensor


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
