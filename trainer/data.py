"""Builds the train and validation sources a run asks for."""

from __future__ import annotations

import argparse
from functools import cache
from pathlib import Path

from teran.config import ExtractorCfg, TeranCfg
from teran.data.base import ImageCaptions, RegionCaptions
from teran.data.cache import RegionCache
from teran.regions import GridRegionExtractor


@cache
def _extractor(cfg: ExtractorCfg) -> GridRegionExtractor:
    return GridRegionExtractor(cfg)


def cached_regions(
    source: ImageCaptions, cfg: TeranCfg, cache_dir: str | Path, name: str, progress: bool = True
) -> RegionCache:
    """Pictures -> regions through the model's extractor, cached under `cache_dir/name`."""
    extractor_cfg = cfg.vision.extractor or ExtractorCfg()
    extractor = _extractor(extractor_cfg)
    if extractor.feat_dim != cfg.vision.feat_dim:
        raise ValueError(
            f"the extractor gives {extractor.feat_dim}-d regions but the model reads "
            f"vision.feat_dim={cfg.vision.feat_dim}"
        )
    tag = f"{extractor_cfg.variant}-{extractor_cfg.stage}-{extractor_cfg.image_size}"
    return RegionCache(source, extractor, Path(cache_dir) / tag / name, progress=progress)


def synthetic_split(
    split: str, n_images: int, seed: int, cfg: TeranCfg, cache_dir: str | Path, progress: bool
) -> RegionCache:
    from teran.data.synthetic import SyntheticScenes

    scenes = SyntheticScenes(n_images=n_images, split=split, seed=seed)
    return cached_regions(scenes, cfg, cache_dir, f"synthetic-{split}-{seed}-{n_images}", progress)


def build_sources(
    args: argparse.Namespace, cfg: TeranCfg
) -> tuple[RegionCaptions, RegionCaptions | None]:
    """(train, validation) sources for `args.dataset`."""
    if args.dataset == "synthetic":
        train = synthetic_split(
            "train", args.train_images, args.data_seed, cfg, args.cache_dir, args.progress
        )
        # validation: confusable groups like the test split, from another seed
        val = (
            synthetic_split(
                "test", args.val_images, args.data_seed + 1, cfg, args.cache_dir, args.progress
            )
            if args.val_images
            else None
        )
        return train, val
    if args.data is None:
        raise ValueError(f"--data is required for --dataset {args.dataset}")
    if args.dataset in ("coco", "f30k"):
        from teran.data.bottomup import BottomUpFeatures

        build = BottomUpFeatures.coco if args.dataset == "coco" else BottomUpFeatures.f30k
        kwargs = {"features_root": args.features_root}
        return build(args.data, "train", **kwargs), build(args.data, args.val_split, **kwargs)
    from teran.data.folder import from_path

    train_images = from_path(args.data)
    val_images = from_path(args.val_data) if args.val_data else None
    stem = Path(args.data).stem
    return (
        cached_regions(train_images, cfg, args.cache_dir, f"folder-{stem}", args.progress),
        cached_regions(val_images, cfg, args.cache_dir, f"folder-{stem}-val", args.progress)
        if val_images is not None
        else None,
    )
