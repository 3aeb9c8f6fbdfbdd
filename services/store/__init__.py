"""Vector storage for the services: images and sentences as TERAN multivectors in Qdrant.

Import a backend explicitly (`services.store.qdrant.QdrantStore` for a Qdrant server or local
mode, `services.store.edge.EdgeStore` for the embedded engine) so that code needing only the
interface does not pay for importing either client.
"""

from .base import (
    AnyOf,
    Equals,
    Hit,
    PayloadFilter,
    StoredImage,
    StoredSentence,
    StoreError,
    StoreUnavailable,
    VectorStore,
)

__all__ = [
    "AnyOf",
    "Equals",
    "Hit",
    "PayloadFilter",
    "StoreError",
    "StoreUnavailable",
    "StoredImage",
    "StoredSentence",
    "VectorStore",
]
