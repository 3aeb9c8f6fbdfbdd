"""Sources -> a model version's image index: shared by ingestion and by upgrades.

Ingestion and re-encoding for a new model version write the same points from the same sources,
so an index made by an upgrade cannot differ from one made by ingesting again.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.image_encoder.encoding import EncodedImage, ImageEncoding, ImageInput
from services.metrics import timed
from services.store.base import Source, StoredImage, VectorStore


def source_input(encoding: ImageEncoding, source: Source, version: str) -> ImageInput:
    """A stored source, checked for model `version` as an ingested item would be."""
    field = f"sources[{source.id!r}]"
    if source.image is not None:
        return encoding.decode(source.image, f"{field}.image", version)
    assert source.features is not None and source.boxes is not None  # Source guarantees one
    return encoding.features_input(source.features, source.boxes, field, version)


def index_images(
    encoding: ImageEncoding,
    store: VectorStore,
    sources: Sequence[Source],
    inputs: Sequence[ImageInput],
    version: str,
) -> list[EncodedImage]:
    """Encode `inputs` with `version` and write them into its index; durable once it returns."""
    encoded = encoding.encode(inputs, version)
    write_images(store, sources, encoded, version)
    return encoded


def write_images(
    store: VectorStore, sources: Sequence[Source], encoded: Sequence[EncodedImage], version: str
) -> None:
    """Write encoded images into `version`'s index, tagged with each source's revision."""
    points = [
        StoredImage(
            id=s.id, regions=e.regions, boxes=e.boxes, uri=s.uri, payload=s.payload, rev=s.rev
        )
        for s, e in zip(sources, encoded, strict=True)
    ]
    with timed("store", "upsert_images"):
        store.upsert_images(points, version)
