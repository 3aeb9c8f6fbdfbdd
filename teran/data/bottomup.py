"""Precomputed bottom-up-attention features in the reference TERAN layout (COCO and Flickr30k).

The paper's numbers come from 36 Faster R-CNN regions per image, extracted once and shipped as
one file per image; this module reads exactly the layout the original mesnico/TERAN `data.py`
reads, so users can train and evaluate at the paper's protocol on their own features:

    DATA/coco/annotations/captions_{train,val}2014.json      COCO caption json
    DATA/coco/annotations/coco_{train,dev,test,restval}_ids.npy   annotation ids, 5 per image
    DATA/f30k/annotations/dataset_flickr30k.json             Karpathy split json
    DATA/f30k/images/sizes.pkl                               (w, h) per image (optional)
    FEATS/bu_att/{img_id}.npz                                key `feat`: [R, F] features
    FEATS/bu_box/{img_id}.npy                                [R, 4] boxes in pixels x1,y1,x2,y2

`FEATS` defaults to `DATA/<name>/features_36`. Every malformed input fails with an exception
naming the file and what is wrong, because a silent KeyError deep in a training loop costs hours.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from teran.data.base import RegionCaptions, Regions

CAPTIONS_PER_IMAGE = 5
COCO_DEV_ANNOTATIONS = 5000
"""The reference validates on the first 1000 dev images (5000 annotation ids) only."""

_SPLITS = {"train": "train", "dev": "dev", "val": "dev", "test": "test"}


@dataclass(frozen=True)
class BottomUpImage:
    """One image of a split: its feature-file id, pixel size (to normalise boxes), captions."""

    image_id: str
    width: int
    height: int
    captions: tuple[str, ...]


class BottomUpFeatures(RegionCaptions):
    """A split of images whose regions are read from `bu_att`/`bu_box` files, one per call."""

    def __init__(self, images: Sequence[BottomUpImage], features_root: str | Path) -> None:
        if not images:
            raise ValueError(f"no images in this split (features root {features_root})")
        self.images = list(images)
        self.features_root = Path(features_root)
        for sub in ("bu_att", "bu_box"):
            folder = self.features_root / sub
            if not folder.is_dir():
                raise FileNotFoundError(f"feature folder {folder} does not exist")
        self._feat_dim: int | None = None
        self._feat_dim = int(self._load_features(0).shape[1])

    @classmethod
    def coco(
        cls,
        data_root: str | Path,
        split: str,
        restval: bool = True,
        features_root: str | Path | None = None,
    ) -> BottomUpFeatures:
        """COCO with Karpathy splits; `restval=True` (the paper's setting) adds restval to train."""
        split = _check_split(split)
        root = Path(data_root) / "coco"
        ann = root / "annotations"
        train_json = ann / "captions_train2014.json"
        val_json = ann / "captions_val2014.json"
        if split == "train":
            images = _coco_images(train_json, ann / "coco_train_ids.npy")
            if restval:
                images += _coco_images(val_json, ann / "coco_restval_ids.npy")
        elif split == "dev":
            images = _coco_images(val_json, ann / "coco_dev_ids.npy", COCO_DEV_ANNOTATIONS)
        else:
            images = _coco_images(val_json, ann / "coco_test_ids.npy")
        return cls(images, features_root if features_root is not None else root / "features_36")

    @classmethod
    def f30k(
        cls,
        data_root: str | Path,
        split: str,
        features_root: str | Path | None = None,
        images_root: str | Path | None = None,
    ) -> BottomUpFeatures:
        """Flickr30k with Karpathy splits; image sizes from `sizes.pkl` or the image headers."""
        split = _check_split(split)
        root = Path(data_root) / "f30k"
        images_dir = Path(images_root) if images_root is not None else root / "images"
        path = root / "annotations" / "dataset_flickr30k.json"
        data = _read_json(path)
        entries = data.get("images") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected an object with an 'images' list")
        karpathy = "val" if split == "dev" else split
        chosen: list[tuple[int, str, tuple[str, ...]]] = []
        for index, entry in enumerate(entries):
            try:
                if entry["split"] != karpathy:
                    continue
                filename = str(entry["filename"])
                captions = tuple(str(s["raw"]) for s in entry["sentences"])
            except (KeyError, TypeError) as e:
                raise ValueError(f"{path}: image #{index} is malformed ({e!r})") from e
            if len(captions) < CAPTIONS_PER_IMAGE:
                raise ValueError(
                    f"{path}: image #{index} ({filename}) has {len(captions)} captions, "
                    f"needs {CAPTIONS_PER_IMAGE}"
                )
            chosen.append((index, filename, captions[:CAPTIONS_PER_IMAGE]))
        sizes_file = images_dir / "sizes.pkl"
        if sizes_file.is_file():
            sizes = _read_sizes(sizes_file, len(entries))
            size_of = {index: sizes[index] for index, _, _ in chosen}
        else:
            size_of = {index: _image_size(images_dir / name) for index, name, _ in chosen}
        images = [
            _image(str(index), *size_of[index], captions, path) for index, _, captions in chosen
        ]
        return cls(images, features_root if features_root is not None else root / "features_36")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def feat_dim(self) -> int:
        assert self._feat_dim is not None
        return self._feat_dim

    def captions(self, index: int) -> list[str]:
        return list(self.images[index].captions)

    def image_id(self, index: int) -> str:
        return self.images[index].image_id

    def feature_path(self, index: int) -> Path:
        return self.features_root / "bu_att" / f"{self.images[index].image_id}.npz"

    def box_path(self, index: int) -> Path:
        return self.features_root / "bu_box" / f"{self.images[index].image_id}.npy"

    def regions(self, index: int) -> Regions:
        features = self._load_features(index)
        path = self.box_path(index)
        boxes = _load_array(path)
        if boxes.shape != (features.shape[0], 4):
            raise ValueError(
                f"{path}: boxes have shape {boxes.shape}, expected ({features.shape[0]}, 4) "
                f"to match {self.feature_path(index)}"
            )
        image = self.images[index]
        scale = np.array([image.width, image.height] * 2, dtype=np.float64)
        normalised = np.clip(boxes.astype(np.float64) / scale, 0.0, 1.0).astype(np.float32)
        return Regions(features=features, boxes=normalised)

    def _load_features(self, index: int) -> np.ndarray:
        path = self.feature_path(index)
        if not path.is_file():
            raise FileNotFoundError(f"feature file {path} does not exist")
        try:
            loaded = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: not a readable .npz archive ({e})") from e
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError(f"{path}: expected an .npz archive with key 'feat', got a plain array")
        with loaded:
            if "feat" not in loaded.files:
                raise ValueError(f"{path}: no 'feat' array (keys: {loaded.files})")
            try:
                feat = np.asarray(loaded["feat"])
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
                raise ValueError(f"{path}: 'feat' cannot be read ({e})") from e
        if feat.ndim != 2 or feat.shape[0] == 0:
            raise ValueError(f"{path}: 'feat' has shape {feat.shape}, expected [regions, dim]")
        if self._feat_dim is not None and feat.shape[1] != self._feat_dim:
            raise ValueError(
                f"{path}: 'feat' has shape {feat.shape}, expected [regions, {self._feat_dim}] "
                "like the first image of the split"
            )
        if not np.issubdtype(feat.dtype, np.number):
            raise ValueError(f"{path}: 'feat' has non-numeric dtype {feat.dtype}")
        return feat.astype(np.float32, copy=False)


def _check_split(split: str) -> str:
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLITS)}")
    return _SPLITS[split]


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def _load_array(path: Path) -> np.ndarray:
    """A plain .npy array, numeric, or an error naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"file {path} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npy array ({e})") from e
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        raise ValueError(f"{path}: expected a .npy array, got an .npz archive")
    if not np.issubdtype(loaded.dtype, np.number):
        raise ValueError(f"{path}: non-numeric dtype {loaded.dtype}")
    return loaded


def _coco_images(json_path: Path, ids_path: Path, limit: int | None = None) -> list[BottomUpImage]:
    """The images of one ids file, grouped from runs of consecutive annotations of one image."""
    ids = _load_array(ids_path)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{ids_path}: expected a 1-D integer array, got {ids.dtype} {ids.shape}")
    if limit is not None:
        ids = ids[:limit]
    data = _read_json(json_path)
    try:
        sizes = {int(im["id"]): (int(im["width"]), int(im["height"])) for im in data["images"]}
        anns = {int(a["id"]): (int(a["image_id"]), str(a["caption"])) for a in data["annotations"]}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{json_path}: not a COCO captions file ({e!r})") from e
    runs: list[tuple[int, list[str]]] = []
    for ann_id in ids.tolist():
        if ann_id not in anns:
            raise ValueError(f"{ids_path}: annotation id {ann_id} is not in {json_path}")
        image_id, caption = anns[ann_id]
        if runs and runs[-1][0] == image_id:
            runs[-1][1].append(caption)
        else:
            runs.append((image_id, [caption]))
    images: list[BottomUpImage] = []
    seen: set[int] = set()
    for image_id, captions in runs:
        if len(captions) != CAPTIONS_PER_IMAGE or image_id in seen:
            raise ValueError(
                f"{ids_path}: image {image_id} has a run of {len(captions)} consecutive "
                f"annotation ids{' (seen before)' if image_id in seen else ''}; every image "
                f"needs exactly {CAPTIONS_PER_IMAGE} in one run"
            )
        seen.add(image_id)
        if image_id not in sizes:
            raise ValueError(f"{json_path}: image {image_id} has annotations but no size entry")
        width, height = sizes[image_id]
        images.append(_image(str(image_id), width, height, captions, json_path))
    return images


def _image(
    image_id: str, width: int, height: int, captions: Sequence[str], source: Path
) -> BottomUpImage:
    if width <= 0 or height <= 0:
        raise ValueError(f"{source}: image {image_id} has size {width}x{height}")
    return BottomUpImage(image_id, width, height, tuple(captions))


class _SizesUnpickler(pickle.Unpickler):
    """Only lists and tuples of ints: a sizes file must never be able to run code."""

    _ALLOWED = frozenset({("builtins", "list"), ("builtins", "tuple"), ("builtins", "int")})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a sizes file")
        return super().find_class(module, name)


def _read_sizes(path: Path, expected: int) -> list[tuple[int, int]]:
    try:
        sizes = _SizesUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as e:
        raise ValueError(f"{path}: not a pickled list of (width, height) ({e})") from e
    if not isinstance(sizes, list) or len(sizes) != expected:
        count = len(sizes) if isinstance(sizes, list) else type(sizes).__name__
        raise ValueError(f"{path}: expected a list of {expected} (width, height), got {count}")
    out: list[tuple[int, int]] = []
    for index, size in enumerate(sizes):
        if (
            not isinstance(size, list | tuple)
            or len(size) != 2
            or not all(isinstance(v, int) and v > 0 for v in size)
        ):
            raise ValueError(f"{path}: entry #{index} is {size!r}, not a (width, height) pair")
        out.append((size[0], size[1]))
    return out


def _image_size(path: Path) -> tuple[int, int]:
    """The pixel size from the image header only (no decode)."""
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist (and no sizes.pkl next to it)")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: cannot read the image size ({e})") from e
    return int(width), int(height)
