"""The vector-store interface the services depend on.

A store holds the sources (the system of record) and, per model version, an index of images and
one of sentences. `store.index(version)` is a handle bound to one version, so a request resolves
the version once (`store.live()` for the live one) and every call it makes reads and writes that
one model's vectors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic

import numpy as np

from services.errors import DependencyUnavailable

from .filters import PayloadFilter
from .naming import SourceKind
from .records import Hit, Item, Source, StoredImage, StoredSentence


class StoreError(Exception):
    """A store operation failed for a reason other than bad input (ValueError)."""


class StoreUnavailable(DependencyUnavailable, StoreError):
    """The store cannot be reached or is closed; services map this to gRPC UNAVAILABLE."""

    component = "vector store"


class Collection(ABC, Generic[Item]):
    """One kind of item (images or sentences) in one model version's index."""

    name: str

    @abstractmethod
    def upsert(self, items: Sequence[Item]) -> None:
        """Insert or overwrite by id, all or nothing after validation; durable once it returns."""

    @abstractmethod
    def get(self, ids: Sequence[str], vectors: bool = True) -> list[Item | None]:
        """Items in `ids` order (None where absent); `vectors=False` leaves their vectors empty."""

    @abstractmethod
    def search(
        self,
        query: np.ndarray,
        limit: int,
        filter: PayloadFilter | None = None,
        *,
        candidates: int = 0,
        with_items: bool = False,
    ) -> list[Hit[Item]]:
        """MaxSim of the query vectors against the stored ones, best first.

        In two-stage layouts the pooled index proposes `max(candidates, limit)` items first;
        `with_items` returns each hit's stored item (vectors included) in the same call."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> list[str]:
        """Delete by id; returns the ids it did not hold."""

    @abstractmethod
    def count(self) -> int:
        """Number of stored items."""

    @abstractmethod
    def revisions(self) -> dict[str, str]:
        """{id: source revision} of every stored item."""

    @abstractmethod
    def build_index(self) -> None:
        """Index what bulk writes left unindexed (a no-op where the backend does it itself)."""


@dataclass(frozen=True)
class VersionIndex:
    """A model version's two collections."""

    version: str
    images: Collection[StoredImage]
    sentences: Collection[StoredSentence]

    def of(self, kind: SourceKind) -> Collection[StoredImage] | Collection[StoredSentence]:
        return self.images if kind == "image" else self.sentences


class VectorStore(ABC):
    """What services need from storage: sources, versioned indexes and the live alias."""

    # -- versions -----------------------------------------------------------------------------

    @abstractmethod
    def open(self, model_version: str, dim: int) -> VersionIndex:
        """Create or open this version's collections (and the sources); ValueError if `dim`
        disagrees. The first version opened in an empty store becomes live."""

    @abstractmethod
    def index(self, model_version: str) -> VersionIndex:
        """The handle of a version opened here; StoreUnavailable otherwise."""

    def live(self, fresh: bool = False) -> VersionIndex:
        """The live version's handle (its name cached briefly unless `fresh`)."""
        return self.index(self.live_version(fresh))

    @abstractmethod
    def live_version(self, fresh: bool = False) -> str:
        """The version the aliases name."""

    @abstractmethod
    def switch_live(self, model_version: str) -> None:
        """Point both aliases at an opened version, atomically."""

    @abstractmethod
    def switched_from(self, model_version: str) -> VersionIndex | None:
        """The live version, read fresh, when an upgrade moved it away from `model_version` and
        it is opened here: a writer that just wrote into `model_version` writes there too.
        None otherwise (a version not opened here is left to the upgrade's catch-up pass)."""

    @abstractmethod
    def versions(self) -> list[str]:
        """Model versions with collections in the store, opened here or not."""

    @abstractmethod
    def opened_versions(self) -> list[str]:
        """Versions opened by this process."""

    @abstractmethod
    def drop_version(self, model_version: str) -> None:
        """Delete a version's collections; refuses the live one."""

    # -- sources ------------------------------------------------------------------------------

    @abstractmethod
    def put_sources(self, items: Sequence[Source]) -> None:
        """Insert or overwrite by (kind, id); durable once it returns."""

    @abstractmethod
    def get_sources(self, kind: SourceKind, ids: Sequence[str]) -> list[Source | None]:
        """Sources in `ids` order (None where absent)."""

    @abstractmethod
    def source_revisions(self, kind: SourceKind) -> dict[str, str]:
        """{id: rev} of every source of `kind`."""

    @abstractmethod
    def count_sources(self, kind: SourceKind) -> int:
        """Number of sources of `kind`."""

    @abstractmethod
    def delete_everywhere(self, kind: SourceKind, ids: Sequence[str]) -> list[str]:
        """Delete items for good: their sources, then their points in every opened version.
        Returns the ids stored nowhere."""

    # -- lifecycle ----------------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Release the backend; later calls raise StoreUnavailable."""

    @abstractmethod
    def healthy(self) -> bool:
        """True when the backend answers (for readiness probes); never raises."""
