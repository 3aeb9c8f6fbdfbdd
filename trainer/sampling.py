"""Batches that keep confusable images together, so the hardest negatives are the informative ones.

TERAN's loss learns from the hardest in-batch negative. In a batch of random pairs that negative
is almost never an image that differs from the positive only by which colour goes with which
shape, or by where things sit: the model can satisfy the margin without learning bindings or
relations, and its validation plateaus while the training loss keeps falling. When a source
declares groups of confusable images (`teran.data.synthetic` does, blocks of 4), every batch
here is made of whole groups, one caption per image, so each positive competes with its group
mates and no image appears twice in a batch (no false negatives).

An epoch is 5 rounds, each a fresh shuffle of the groups with one caption per image, an image's
5 captions spread over the 5 rounds: every pair is seen once (less a partial batch per round).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class GroupBatchSampler(Sampler[list[int]]):
    """Batches of pair indices (image * captions_per_image + k) built from whole image groups.

    `groups` lists the image indices of each group. With several processes, each global batch of
    `batch_size * world_size` pairs is split into contiguous per-process slices, so the groups
    stay together in the gathered batch the loss sees.
    """

    def __init__(
        self,
        groups: Sequence[Sequence[int]],
        captions_per_image: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {batch_size}")
        self.groups = [list(g) for g in groups if g]
        self.captions_per_image = captions_per_image
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        images = sum(len(g) for g in self.groups)
        self._batches = captions_per_image * (images // (batch_size * world_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self._batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(f"{self.seed}/{self.epoch}")
        per_image = {
            image: rng.sample(range(self.captions_per_image), self.captions_per_image)
            for group in self.groups
            for image in group
        }
        global_size = self.batch_size * self.world_size
        start = self.rank * self.batch_size
        for round_ in range(self.captions_per_image):
            order = self.groups[:]
            rng.shuffle(order)
            stream = [
                image * self.captions_per_image + per_image[image][round_]
                for group in order
                for image in group
            ]
            # batches never straddle two rounds, so no image is in a batch twice
            for b in range(len(stream) // global_size):
                batch = stream[b * global_size : (b + 1) * global_size]
                yield batch[start : start + self.batch_size]


def source_groups(source: object, n_images: int) -> list[list[int]] | None:
    """The confusable groups a source declares (`group(index)` -> id or None), every ungrouped
    image a group of its own; None when the source declares none."""
    inner = getattr(source, "source", source)  # a RegionCache wraps the picture source
    group_of = getattr(inner, "group", None)
    if group_of is None:
        return None
    groups: dict[object, list[int]] = {}
    for index in range(n_images):
        key = group_of(index)
        groups.setdefault(("image", index) if key is None else key, []).append(index)
    return list(groups.values())
