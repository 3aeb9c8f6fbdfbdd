"""The training task: the model plus its objective, as one module DDP can wrap."""

from __future__ import annotations

from torch import Tensor, nn

from teran.alignment import MEASURES
from teran.data.pairs import PairBatch
from teran.embeddings import ImageEmbedding, TextEmbedding
from teran.loss import hinge_triplet_loss
from teran.model import Teran
from trainer.distributed import DistInfo, gather_padded


class TeranTask(nn.Module):
    """Encodes a batch of matching pairs and returns the hinge-triplet loss on their scores.

    `measure` is an alignment mode (TERAN) or "global" (the VSE++-style single-vector baseline
    on the same architecture). `text_features` optionally maps caption indices to cached
    outputs of a frozen backbone.
    """

    def __init__(
        self,
        model: Teran,
        measure: str,
        margin: float = 0.2,
        max_violation: bool = True,
        dist_info: DistInfo | None = None,
    ) -> None:
        super().__init__()
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
        self.model = model
        self.measure = measure
        self.margin = margin
        self.max_violation = max_violation
        self.dist = dist_info or DistInfo()

    def forward(self, batch: PairBatch, text_hidden: Tensor | None = None) -> dict[str, Tensor]:
        images = self.model.encode_image(batch.features, batch.boxes, batch.n_regions)
        if text_hidden is None:
            texts = self.model.encode_text(batch.token_ids, batch.lengths)
        else:
            texts = self.model.encode_text_features(text_hidden, batch.lengths)
        slots, img_len = gather_padded(images.slots, images.lengths, self.dist)
        tokens, txt_len = gather_padded(texts.tokens, texts.lengths, self.dist)
        scores = self.model.score(
            ImageEmbedding(slots, img_len), TextEmbedding(tokens, txt_len), self.measure
        )
        loss = hinge_triplet_loss(scores, self.margin, self.max_violation)
        return {
            "loss": loss * self.dist.world_size,
            "batch_loss": loss.detach(),
            "scores": scores.detach(),
        }
