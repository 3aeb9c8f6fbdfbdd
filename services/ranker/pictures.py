"""Stored pictures for display: the source as received, or a small JPEG thumbnail of it.

The source was checked at ingest (bytes and decoded pixels within the image encoder's limits),
so decoding it here is bounded; a thumbnail is a fraction of the source's size.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from services.errors import InvalidArgument

MIN_SIDE = 16
MAX_SIDE = 1024
OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True)
class Picture:
    data: bytes
    content_type: str
    width: int
    height: int


def describe(data: bytes) -> Picture:
    """The source as received, with its media type and size read from the header."""
    with Image.open(io.BytesIO(data)) as image:
        mime = Image.MIME.get(image.format or "", OCTET_STREAM)
        return Picture(data, mime, image.width, image.height)


def thumbnail(data: bytes, max_side: int, field: str = "max_side") -> Picture:
    """A JPEG whose longer side is at most `max_side` pixels (never enlarged)."""
    if not MIN_SIDE <= max_side <= MAX_SIDE:
        raise InvalidArgument(field, f"{max_side}: 0 (the source) or {MIN_SIDE}..{MAX_SIDE}")
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale
        picture = image.convert("RGB")
    picture.thumbnail((max_side, max_side))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=85)
    return Picture(out.getvalue(), "image/jpeg", picture.width, picture.height)
