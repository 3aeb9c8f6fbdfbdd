"""Region features computed once per image and kept on disk.

Extraction is the slow part of training on pictures (tens of images per second on a CPU); the
cache makes every later epoch, run and benchmark read features from a memory-mapped array. A
cache is tied to the source's image ids and to the extractor's configuration; anything else
found in its folder is recomputed, and a cache is only marked complete once fully written.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from teran.data.base import ImageCaptions, RegionCaptions, Regions
from teran.regions import GridRegionExtractor

META = "meta.json"


class RegionCache(RegionCaptions):
    """An `ImageCaptions` source seen through a region extractor, features cached in `folder`."""

    def __init__(
        self,
        source: ImageCaptions,
        extractor: GridRegionExtractor,
        folder: str | Path,
        batch_size: int = 32,
        progress: bool = True,
    ) -> None:
        self.source = source
        self.folder = Path(folder)
        meta: dict[str, object] = {
            "extractor": asdict(extractor.cfg),
            "image_ids": [source.image_id(i) for i in range(len(source))],
        }
        if not self._is_complete(meta):
            self._build(extractor, meta, batch_size, progress)
        self._features = np.load(self.folder / "features.npy", mmap_mode="r")
        self._boxes = np.load(self.folder / "boxes.npy")

    def _is_complete(self, meta: dict[str, object]) -> bool:
        path = self.folder / META
        if not path.is_file():
            return False
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError:
            return False
        return bool(stored.get("complete")) and all(stored.get(k) == v for k, v in meta.items())

    def _build(
        self,
        extractor: GridRegionExtractor,
        meta: dict[str, object],
        batch_size: int,
        progress: bool,
    ) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / META).unlink(missing_ok=True)
        n = len(self.source)
        cells = extractor.grid * extractor.grid
        features = np.lib.format.open_memmap(
            self.folder / "features.npy",
            mode="w+",
            dtype=np.float16,
            shape=(n, cells, extractor.feat_dim),
        )
        bar = tqdm(total=n, desc=f"regions -> {self.folder.name}", disable=not progress, unit="img")
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                images = [self.source.image(i) for i in range(start, stop)]
                feats, _ = extractor.extract(images)
                features[start:stop] = feats.numpy().astype(np.float16)
                bar.update(stop - start)
        bar.close()
        features.flush()
        del features
        np.save(self.folder / "boxes.npy", extractor.boxes().numpy())
        (self.folder / META).write_text(json.dumps({**meta, "complete": True}) + "\n")

    def __len__(self) -> int:
        return len(self.source)

    @property
    def feat_dim(self) -> int:
        return int(self._features.shape[2])

    def captions(self, index: int) -> list[str]:
        return self.source.captions(index)

    def image_id(self, index: int) -> str:
        return self.source.image_id(index)

    def regions(self, index: int) -> Regions:
        return Regions(
            features=np.asarray(self._features[index], dtype=np.float32), boxes=self._boxes
        )
