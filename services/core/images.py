"""Images to region embeddings: decode and check here, run the image model on the backend.

Pictures go through the built-in grid extractor (inside the exported pixels model); precomputed
region features (e.g. bottom-up attention) go through the features model. Both give the same
thing: region vectors in the common space, their boxes, and the image-level vector.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from services.config import ImageEncoderCfg
from services.errors import InvalidArgument, ResourceExhausted
from services.inference.models import ServedModels
from teran.pixels import pixel_array

# The pixel limit is this service's (`max_pixels`, checked before decoding), not PIL's warning
# at 89 megapixels, which would only repeat it, in PIL's words. Past twice that, PIL still
# refuses to open an image (DecompressionBombError), reported with the service's limit.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)
_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def _plain(err: BaseException) -> str:
    """PIL's message without object reprs (`<_io.BytesIO object at 0x...>`): callers get
    what is wrong with their data, not the server's memory addresses."""
    if isinstance(err, Image.UnidentifiedImageError):
        return "not an image format this service reads (PNG, JPEG, WebP, GIF, ...)"
    return _REPR.sub("the data", str(err)) or type(err).__name__


@dataclass
class EncodedImage:
    regions: np.ndarray
    """[R, D] region vectors (CLS slot excluded), L2-normalised."""
    boxes: np.ndarray
    """[R, 4] fractions of the image size."""
    global_vector: np.ndarray
    """[D] the CLS slot."""


@dataclass(frozen=True)
class Regions:
    """Precomputed region features and their boxes (fractions of the image size)."""

    features: np.ndarray
    """[R, F] finite float32."""
    boxes: np.ndarray
    """[R, 4] with 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1."""

    @property
    def size_bytes(self) -> int:
        return int(self.features.nbytes)


@dataclass(frozen=True)
class Picture:
    """A decoded picture and the bytes it came as (kept as the item's source)."""

    image: Image.Image
    data: bytes = b""

    @property
    def size_bytes(self) -> int:
        return len(self.data)


ImageQuery = bytes | Regions
"""An image as a caller gives it: an encoded picture, or precomputed regions."""
ImageInput = Picture | Regions
"""An image checked for a model version: what `ImageEncoding.encode` takes."""


class ImageSource(Protocol):
    """Turns an image into region embeddings: in-process `ImageEncoding` or a gRPC client of
    the ImageEncoder service (for a ranker running alone)."""

    def encode_query(
        self, query: ImageQuery, field: str, version: str | None = None
    ) -> EncodedImage: ...


class ImageEncoding:
    """The image side of the platform, used by the ImageEncoder service and the ranker."""

    def __init__(self, models: ServedModels, cfg: ImageEncoderCfg) -> None:
        self.models = models
        self.cfg = cfg

    def decode(self, data: bytes, field: str, version: str | None = None) -> ImageInput:
        """Bytes -> RGB picture, refusing empty, oversized, bomb and undecodable inputs; the
        size is read from the header (PIL opens lazily) and checked before decoding."""
        if not data:
            raise InvalidArgument(field, "empty image")
        if len(data) > self.cfg.max_image_bytes:
            raise ResourceExhausted(
                field, f"{len(data)} bytes, more than the limit of {self.cfg.max_image_bytes}"
            )
        if self.models.backend(version).info.image_size is None:
            raise InvalidArgument(field, "this model reads precomputed regions only, not pictures")
        try:
            opened = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as err:  # past PIL's own limit, far past ours
            raise self._too_large(field, "") from err
        except Exception as err:  # PIL raises many types for bad data
            raise InvalidArgument(field, f"cannot decode image: {_plain(err)}") from err
        width, height = opened.size
        if width * height > self.cfg.max_pixels:
            raise self._too_large(field, f"{width}x{height} pixels, ")
        try:
            picture = opened.convert("RGB")  # decodes: errors surface here
        except Exception as err:
            raise InvalidArgument(field, f"cannot decode image: {_plain(err)}") from err
        return Picture(picture, data)

    def _too_large(self, field: str, size: str) -> ResourceExhausted:
        return ResourceExhausted(
            field, f"{size}more than the limit of {self.cfg.max_pixels} pixels decoded"
        )

    def pixels(self, data: bytes) -> int:
        """Pixels `data` decodes to, from its header alone; 0 for what `decode` refuses before
        decoding (too large, unreadable), so it costs nothing in a chunk's budget."""
        if not data or len(data) > self.cfg.max_image_bytes:
            return 0
        try:
            with Image.open(io.BytesIO(data)) as opened:
                width, height = opened.size
        except Exception:
            return 0
        return width * height if width * height <= self.cfg.max_pixels else 0

    def features_input(
        self, features: np.ndarray, boxes: np.ndarray, field: str, version: str | None = None
    ) -> ImageInput:
        feat_dim = self.models.backend(version).info.feat_dim
        if features.shape[1] != feat_dim:
            raise InvalidArgument(
                f"{field}.features",
                f"{features.shape[1]} values per region, the model reads {feat_dim}",
            )
        if features.shape[0] > self.cfg.max_regions:
            raise InvalidArgument(
                f"{field}.features", f"{features.shape[0]} regions, at most {self.cfg.max_regions}"
            )
        return Regions(features, boxes)

    def check(self, query: ImageQuery, field: str, version: str | None = None) -> ImageInput:
        """A caller's image, checked for model `version` (`field` names it in errors)."""
        if isinstance(query, Regions):
            return self.features_input(query.features, query.boxes, field, version)
        return self.decode(query, field, version)

    def encode_query(
        self, query: ImageQuery, field: str, version: str | None = None
    ) -> EncodedImage:
        return self.encode([self.check(query, field, version)], version)[0]

    def encode(
        self, inputs: Sequence[ImageInput], version: str | None = None
    ) -> list[EncodedImage]:
        """Checked inputs -> embeddings with model `version` (None: the primary), pictures and
        feature sets each in one model call."""
        backend = self.models.backend(version)
        out: list[EncodedImage | None] = [None] * len(inputs)
        pictures = [(i, x) for i, x in enumerate(inputs) if isinstance(x, Picture)]
        regions = [(i, x) for i, x in enumerate(inputs) if isinstance(x, Regions)]
        if pictures:
            size = backend.info.image_size
            if size is None:
                raise InvalidArgument("image", "this model reads precomputed regions only")
            pixels = pixel_array([x.image for _, x in pictures], size)
            slots, boxes = backend.encode_pixels(pixels)
            for row, (i, _) in enumerate(pictures):
                out[i] = EncodedImage(slots[row, 1:], boxes[row], slots[row, 0])
        if regions:
            width = max(len(x.features) for _, x in regions)
            feat_dim = backend.info.feat_dim
            feats = np.zeros((len(regions), width, feat_dim), dtype=np.float32)
            boxes_in = np.zeros((len(regions), width, 4), dtype=np.float32)
            counts = np.zeros(len(regions), dtype=np.int64)
            for row, (_, x) in enumerate(regions):
                f, b = x.features, x.boxes
                feats[row, : len(f)], boxes_in[row, : len(b)], counts[row] = f, b, len(f)
            slots = backend.encode_regions(feats, boxes_in, counts)
            for row, (i, _) in enumerate(regions):
                n = int(counts[row])
                out[i] = EncodedImage(slots[row, 1 : n + 1], boxes_in[row, :n], slots[row, 0])
        return [e for e in out if e is not None]
