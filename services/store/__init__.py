"""Vector storage for the services: images and sentences as TERAN multivectors in Qdrant.

Import a backend explicitly (`services.store.qdrant.QdrantStore` for a Qdrant server or local
mode, `services.store.edge.EdgeStore` for the embedded engine) so that code needing only the
interface does not pay for importing either client.
"""

from .filters import AnyOf, Equals, PayloadFilter
from .interface import Collection, StoreError, StoreUnavailable, VectorStore, VersionIndex
from .layout import IndexLayout
from .naming import SourceKind, collection_names
from .records import Hit, Source, StoredImage, StoredSentence, new_rev

__all__ = [
    "AnyOf",
    "Collection",
    "Equals",
    "Hit",
    "IndexLayout",
    "PayloadFilter",
    "Source",
    "SourceKind",
    "StoreError",
    "StoreUnavailable",
    "StoredImage",
    "StoredSentence",
    "VectorStore",
    "VersionIndex",
    "collection_names",
    "new_rev",
]
