"""Image-caption pairs, the unit TERAN trains on, and their padded batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from teran.data.base import RegionCaptions
from teran.tokenizer import SentenceTokenizer


@dataclass
class PairBatch:
    features: Tensor
    """[B, R, F] region features, zero-padded."""
    boxes: Tensor
    """[B, R, 4]."""
    n_regions: Tensor
    """[B]."""
    token_ids: Tensor
    """[B, T] padded with the tokenizer's pad id."""
    lengths: Tensor
    """[B] tokens per caption."""
    image_index: Tensor
    """[B] index of each pair's image in the source."""
    caption_index: Tensor
    """[B] index of each pair's caption (image * captions_per_image + k)."""


class CaptionPairs(Dataset[int]):
    """Every (image, caption) pair of a source; captions are tokenised once, up front."""

    def __init__(
        self, source: RegionCaptions, tokenizer: SentenceTokenizer, captions_per_image: int = 5
    ) -> None:
        self.source = source
        self.captions_per_image = captions_per_image
        self.pad_id = tokenizer.pad_id
        captions: list[str] = []
        for i in range(len(source)):
            caps = source.captions(i)
            if len(caps) < captions_per_image:
                raise ValueError(
                    f"image {source.image_id(i)}: {len(caps)} captions, need {captions_per_image}"
                )
            captions.extend(caps[:captions_per_image])
        self.captions = captions
        tokens = tokenizer(captions, truncate=True)
        self.token_ids = [tokens.ids[k, : int(n)] for k, n in enumerate(tokens.lengths)]

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: Sequence[int]) -> PairBatch:
        """Indices of pairs -> a padded batch (regions read from the source here)."""
        image_index = [k // self.captions_per_image for k in indices]
        regions = [self.source.regions(i) for i in image_index]
        ids = [self.token_ids[k] for k in indices]
        features, boxes, n_regions = pad_regions(
            [r.features for r in regions], [r.boxes for r in regions]
        )
        width = max(len(t) for t in ids)
        token_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        for row, t in enumerate(ids):
            token_ids[row, : len(t)] = t
        return PairBatch(
            features=features,
            boxes=boxes,
            n_regions=n_regions,
            token_ids=token_ids,
            lengths=torch.tensor([len(t) for t in ids]),
            image_index=torch.tensor(image_index),
            caption_index=torch.tensor(list(indices)),
        )


def pad_regions(
    features: Sequence[np.ndarray], boxes: Sequence[np.ndarray]
) -> tuple[Tensor, Tensor, Tensor]:
    """Ragged region sets -> (features [B, R, F], boxes [B, R, 4], n_regions [B])."""
    counts = [len(f) for f in features]
    width, feat_dim = max(counts), features[0].shape[1]
    out_f = torch.zeros(len(features), width, feat_dim)
    out_b = torch.zeros(len(features), width, 4)
    for i, (f, b) in enumerate(zip(features, boxes, strict=True)):
        out_f[i, : len(f)] = torch.from_numpy(np.asarray(f, dtype=np.float32))
        out_b[i, : len(b)] = torch.from_numpy(np.asarray(b, dtype=np.float32))
    return out_f, out_b, torch.tensor(counts)
