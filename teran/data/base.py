"""The one dataset interface every source implements, whatever it reads.

A source is a list of images, each with its captions (5 per image for the paper's protocols).
Sources that hold region features (bottom-up-attention layouts) implement `RegionCaptions`
directly; sources that hold pictures (a folder of photos, synthetic scenes) implement
`ImageCaptions`, and `teran.data.cache.RegionCache` turns them into `RegionCaptions` with a
region extractor, computing features once and keeping them on disk.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Regions:
    """One image as TERAN sees it: region features and their boxes."""

    features: np.ndarray
    """[R, F] float32."""
    boxes: np.ndarray
    """[R, 4] float32: x1, y1, x2, y2 as fractions of the image width/height."""

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.boxes.shape != (self.features.shape[0], 4):
            raise ValueError(
                f"regions need features [R, F] and boxes [R, 4], got {self.features.shape} and "
                f"{self.boxes.shape}"
            )


class CaptionedSource(abc.ABC):
    """What every source has: images with ids and captions."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of images."""

    @abc.abstractmethod
    def captions(self, index: int) -> list[str]:
        """The captions of image `index`."""

    def image_id(self, index: int) -> str:
        """A stable identifier of image `index` (file stem, dataset id)."""
        return str(index)


class RegionCaptions(CaptionedSource):
    """Images as region features."""

    @property
    @abc.abstractmethod
    def feat_dim(self) -> int:
        """Width of one region feature."""

    @abc.abstractmethod
    def regions(self, index: int) -> Regions:
        """The regions of image `index`."""


class ImageCaptions(CaptionedSource):
    """Images as pictures."""

    @abc.abstractmethod
    def image(self, index: int) -> Image.Image:
        """Image `index` as RGB."""
