"""Group batches: confusable images share a batch, no image twice, every pair once per epoch."""

from __future__ import annotations

from teran.data.synthetic import SyntheticScenes
from trainer.sampling import GroupBatchSampler, source_groups


def test_synthetic_groups_are_declared_and_ungrouped_images_stand_alone() -> None:
    scenes = SyntheticScenes(64, split="train", seed=0)
    groups = source_groups(scenes, len(scenes))
    assert groups is not None
    assert sorted(i for g in groups for i in g) == list(range(64))
    for g in groups:
        assert len(g) in (1, 4)
        assert len({scenes.group(i) for i in g}) == 1
    assert any(len(g) == 4 for g in groups) and any(len(g) == 1 for g in groups)
    assert source_groups(object(), 4) is None


def test_batches_hold_whole_groups_and_every_pair_once() -> None:
    groups = [[4 * k + j for j in range(4)] for k in range(12)]  # 48 images in groups of 4
    sampler = GroupBatchSampler(groups, captions_per_image=5, batch_size=16, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5 * 3
    pairs = [p for b in batches for p in b]
    assert sorted(pairs) == list(range(48 * 5))
    for batch in batches:
        images = [p // 5 for p in batch]
        assert len(set(images)) == len(images), "an image twice in one batch"
        # batches are 16 images = 4 whole groups
        assert sorted({i // 4 for i in images}) == sorted(i // 4 for i in images[::4])
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_processes_split_each_global_batch() -> None:
    groups = [[4 * k + j for j in range(4)] for k in range(8)]
    whole = list(GroupBatchSampler(groups, 5, 16, seed=1))
    ranks = [list(GroupBatchSampler(groups, 5, 8, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == whole
