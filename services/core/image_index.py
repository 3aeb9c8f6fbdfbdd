"""Sources -> a model version's image index: shared by ingestion and by upgrades; and back,
a stored image as the query of a search.

Ingestion and re-encoding for a new model version write the same points from the same sources,
so an index made by an upgrade cannot differ from one made by ingesting again.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.core.images import EncodedImage, ImageEncoding, ImageInput, Regions
from services.errors import NotFound
from services.metrics import timed
from services.store import Source, StoredImage, VersionIndex


def source_input(encoding: ImageEncoding, source: Source, version: str) -> ImageInput:
    """A stored source, checked for model `version` as an ingested item would be."""
    field = f"sources[{source.id!r}]"
    if source.image is not None:
        return encoding.decode(source.image, f"{field}.image", version)
    assert source.features is not None and source.boxes is not None  # Source guarantees one
    return encoding.check(Regions(source.features, source.boxes), field, version)


def index_images(
    encoding: ImageEncoding,
    index: VersionIndex,
    sources: Sequence[Source],
    inputs: Sequence[ImageInput],
) -> list[EncodedImage]:
    """Encode `inputs` with `index`'s model version and write them into it; durable once it
    returns."""
    encoded = encoding.encode(inputs, index.version)
    write_images(index, sources, encoded)
    return encoded


def write_images(
    index: VersionIndex, sources: Sequence[Source], encoded: Sequence[EncodedImage]
) -> None:
    """Write encoded images into `index`, tagged with each source's revision."""
    points = [
        StoredImage(
            id=s.id, regions=e.regions, boxes=e.boxes, uri=s.uri, payload=s.payload, rev=s.rev
        )
        for s, e in zip(sources, encoded, strict=True)
    ]
    with timed("store", "upsert_images"):
        index.images.upsert(points)


def stored_query(index: VersionIndex, image_id: str, field: str) -> EncodedImage:
    """A stored image's vectors in `index`'s model version, as a search's query; NOT_FOUND
    naming `field` when there is none. (The stored point keeps no CLS slot: the mean region
    stands in for the image-level vector.)"""
    stored = index.images.get([image_id])[0]
    if stored is None:
        raise NotFound(f"{field}: no stored image {image_id!r}")
    return EncodedImage(stored.regions, stored.boxes, stored.regions.mean(0))
