"""What the two encoders return: padded vector sets with their lengths and TERAN's conventions.

The image side reserves slot 0 for an image-level CLS slot; regions are slots 1..n. The text side
keeps every token; the words that take part in the alignment are positions 1..len-3, i.e. every
token except [CLS], [SEP] and the token right before [SEP] (the full stop, or the last word
piece of a sentence without one), as in the reference implementation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from teran.tokenizer import TEXT_TOKENS_LEFT_OUT


def length_mask(lengths: Tensor, size: int) -> Tensor:
    """[B, size] bool, True on the first `lengths[b]` positions of row b."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


@dataclass
class ImageEmbedding:
    """Per-slot image vectors in the common space, L2-normalised; slot 0 is the CLS slot."""

    slots: Tensor
    """[B, S, D]; positions at or past `lengths` are 0."""
    lengths: Tensor
    """[B] int64: regions + 1."""

    @property
    def regions(self) -> Tensor:
        return self.slots[:, 1:]

    @property
    def region_mask(self) -> Tensor:
        return length_mask(self.lengths - 1, self.slots.shape[1] - 1)

    @property
    def global_vector(self) -> Tensor:
        """[B, D] the CLS slot: TERAN's aggregated image vector."""
        return self.slots[:, 0]

    def item(self, index: int) -> Tensor:
        """[n_regions, D] the valid regions of one image."""
        return self.slots[index, 1 : int(self.lengths[index])]


@dataclass
class TextEmbedding:
    """Per-token sentence vectors in the common space, L2-normalised; position 0 is [CLS]."""

    tokens: Tensor
    """[B, T, D]; positions at or past `lengths` are 0."""
    lengths: Tensor
    """[B] int64: tokens including [CLS] and [SEP]."""

    @property
    def words(self) -> Tensor:
        return self.tokens[:, 1:]

    @property
    def word_mask(self) -> Tensor:
        return length_mask(self.lengths - TEXT_TOKENS_LEFT_OUT, self.tokens.shape[1] - 1)

    @property
    def global_vector(self) -> Tensor:
        """[B, D] the [CLS] position: TERAN's aggregated sentence vector."""
        return self.tokens[:, 0]

    def item(self, index: int) -> Tensor:
        """[n_words, D] the aligned words of one sentence."""
        return self.tokens[index, 1 : max(1, int(self.lengths[index]) - TEXT_TOKENS_LEFT_OUT + 1)]
