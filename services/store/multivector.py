"""`VectorStore` on top of a few per-collection primitives that each Qdrant backend provides.

Id mapping, payload layout, validation, summaries and filter translation live here so that the
backends cannot drift apart; images and sentences share one `KindCollection` described by
their `Kind`.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .filters import Clauses, MatchAtom, PayloadFilter, filter_clauses
from .interface import Collection, StoreUnavailable, VectorStore, VersionIndex
from .layout import IndexLayout
from .naming import (
    IMAGES_ALIAS,
    SENTENCES_ALIAS,
    SOURCE_VECTOR,
    SOURCES,
    SUMMARY_VECTOR,
    SourceKind,
    collection_name,
    collection_names,
    point_id,
    source_point_id,
    version_of,
)
from .points import PointData, QueryPlan, Row
from .records import (
    IMAGES,
    KEY_ID,
    KEY_KIND,
    KEY_REV,
    SENTENCES,
    Hit,
    Item,
    Kind,
    Source,
    check_id,
    check_ids,
    check_unique,
    check_vectors,
)

log = logging.getLogger(__name__)

_PLACEHOLDER = np.ones((1, 1), dtype=np.float32)


class KindCollection(Collection[Item]):
    """A kind's collection in one version, over the store's primitives."""

    def __init__(self, store: MultiVectorStore, kind: Kind[Item], version: str, dim: int) -> None:
        self.store = store
        self.kind: Kind[Item] = kind
        self.name = collection_name(kind.name, version)
        self.dim = dim

    def upsert(self, items: Sequence[Item]) -> None:
        self.store.check_open()
        points: list[PointData] = []
        layout = self.store.layout
        for item in items:
            vectors, payload = self.kind.to_point(item, self.dim)
            named = {self.kind.vector: vectors, SUMMARY_VECTOR: layout.summarize(vectors)}
            points.append((point_id(payload[KEY_ID]), named, payload))
        check_unique([p[2][KEY_ID] for p in points])
        if points:
            self.store._upsert(self.name, points)

    def get(self, ids: Sequence[str], vectors: bool = True) -> list[Item | None]:
        self.store.check_open()
        pids = [point_id(i) for i in check_ids(ids)]
        if not pids:
            return []
        unique = list(dict.fromkeys(pids))
        found = self.store._retrieve(self.name, self.kind.vector, unique, True, vectors)
        out: list[Item | None] = []
        for pid in pids:
            rec = found.get(pid)
            if rec is None or (vectors and rec[0] is None):
                out.append(None)
            else:
                out.append(self.kind.from_point(rec[0], rec[1]))
        return out

    def search(
        self,
        query: np.ndarray,
        limit: int,
        filter: PayloadFilter | None = None,
        *,
        candidates: int = 0,
        with_items: bool = False,
    ) -> list[Hit[Item]]:
        self.store.check_open()
        what = f"query vectors for {self.kind.name}s"
        q = np.ascontiguousarray(query, dtype=np.float32)
        check_vectors(what, q, self.dim, normalised=False)
        top = self.store.MAX_LIMIT
        for name, value in (("limit", limit), ("candidates", candidates)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise ValueError(f"{name} must be an integer in [0, {top}], got {value!r}")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        two_stage = self.store.layout.search == "two_stage"
        plan = QueryPlan(
            vector=self.kind.vector,
            query=q,
            limit=limit,
            clauses=filter_clauses(filter),
            two_stage=two_stage,
            candidates=max(candidates, limit),
            with_vectors=with_items,
        )
        rows = self.store._query(self.name, plan)
        return [
            Hit(
                id=str(payload[KEY_ID]),
                score=float(score),
                item=self.kind.from_point(vec, payload) if with_items else None,
            )
            for payload, score, vec in rows
        ]

    def delete(self, ids: Sequence[str]) -> list[str]:
        self.store.check_open()
        checked = list(dict.fromkeys(check_ids(ids)))
        if not checked:
            return []
        by_pid = {point_id(i): i for i in checked}
        present = self.store._retrieve(self.name, self.kind.vector, list(by_pid), False, False)
        if present:
            self.store._delete(self.name, list(present))
        return [i for pid, i in by_pid.items() if pid not in present]

    def count(self) -> int:
        self.store.check_open()
        return self.store._count(self.name)

    def revisions(self) -> dict[str, str]:
        self.store.check_open()
        return {
            str(p[KEY_ID]): str(p.get(KEY_REV, ""))
            for p in self.store._scroll(self.name, [KEY_ID, KEY_REV], self.store.SCROLL_BATCH)
        }

    def build_index(self) -> None:
        self.store.check_open()
        self.store._build_index(self.name)


class MultiVectorStore(VectorStore):
    """The store's logic over the primitives below, which each backend implements."""

    MAX_LIMIT = 10_000
    SCROLL_BATCH = 1024

    def __init__(self, layout: IndexLayout | None = None, alias_ttl_s: float = 1.0) -> None:
        self.layout = layout or IndexLayout()
        self._opened: dict[str, VersionIndex] = {}
        self._closed = False
        self.alias_ttl_s = alias_ttl_s
        self._live: tuple[str, float] | None = None
        self._live_lock = threading.Lock()

    # -- primitives -------------------------------------------------------------------------

    @abstractmethod
    def _open_collection(self, name: str, vector_name: str, dim: int, indexed: bool) -> None:
        """Create `name` if missing (`indexed`: with the pooled vectors and `self.layout`);
        ValueError if it exists with another vector config."""

    @abstractmethod
    def _upsert(self, name: str, points: list[PointData]) -> None:
        """Write points durably (returns only once they survive a process crash)."""

    @abstractmethod
    def _retrieve(
        self, name: str, vector_name: str, pids: list[str], payload: bool, vectors: bool
    ) -> dict[str, tuple[np.ndarray | None, dict[str, Any]]]:
        """Stored points by point id (absent ids omitted), with their full payload (else only
        KEY_ID) and multivector when asked for."""

    @abstractmethod
    def _query(self, name: str, plan: QueryPlan) -> list[Row]:
        """Top `plan.limit` by MaxSim, best first, payload with at least KEY_ID."""

    @abstractmethod
    def _delete(self, name: str, pids: list[str]) -> None:
        """Delete points by id, durably."""

    @abstractmethod
    def _count(self, name: str, clauses: Clauses | None = None) -> int:
        """Exact number of points (matching `clauses` when given)."""

    @abstractmethod
    def _scroll(self, name: str, keys: list[str], batch: int) -> Iterator[dict[str, Any]]:
        """The `keys` of every point's payload, in any order."""

    @abstractmethod
    def _get_alias(self, alias: str) -> str | None:
        """The collection `alias` names, None when it does not exist."""

    @abstractmethod
    def _set_aliases(self, aliases: dict[str, str]) -> None:
        """Create or move every alias to its collection in one atomic operation."""

    @abstractmethod
    def _collections(self) -> list[str]:
        """Names of every collection in the store."""

    @abstractmethod
    def _drop(self, name: str) -> None:
        """Delete a collection and its data."""

    @abstractmethod
    def _close(self) -> None:
        """Release backend resources."""

    def _build_index(self, name: str) -> None:
        """Index unindexed points now (servers do it in the background)."""

    # -- versions ---------------------------------------------------------------------------

    def check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("store is closed")

    def open(self, model_version: str, dim: int) -> VersionIndex:
        self.check_open()
        images, sentences = collection_names(model_version)
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self._open_collection(SOURCES, SOURCE_VECTOR, 1, indexed=False)
        self._open_collection(images, IMAGES.vector, dim, indexed=True)
        self._open_collection(sentences, SENTENCES.vector, dim, indexed=True)
        index = VersionIndex(
            model_version,
            KindCollection(self, IMAGES, model_version, dim),
            KindCollection(self, SENTENCES, model_version, dim),
        )
        self._opened[model_version] = index
        if self._get_alias(IMAGES_ALIAS) is None:
            self._set_aliases({IMAGES_ALIAS: images, SENTENCES_ALIAS: sentences})
        return index

    def index(self, model_version: str) -> VersionIndex:
        self._require_opened()
        opened = self._opened.get(model_version)
        if opened is None:
            raise StoreUnavailable(
                f"model version {model_version!r} is not opened here (opened: {list(self._opened)})"
            )
        return opened

    def live(self, fresh: bool = False) -> VersionIndex:
        self._require_opened()
        return self.index(self.live_version(fresh))

    def opened_versions(self) -> list[str]:
        return list(self._opened)

    def live_version(self, fresh: bool = False) -> str:
        self.check_open()
        now = time.monotonic()
        with self._live_lock:
            cached = self._live
        if cached is not None and not fresh and now - cached[1] < self.alias_ttl_s:
            return cached[0]
        name = self._get_alias(IMAGES_ALIAS)
        version = version_of(name) if name is not None else None
        if version is None:
            raise StoreUnavailable(
                f"alias {IMAGES_ALIAS!r} names no model version's collection ({name!r}): "
                "open a version first"
            )
        with self._live_lock:
            self._live = (version, now)
        return version

    def switch_live(self, model_version: str) -> None:
        index = self.index(model_version)
        self._set_aliases({IMAGES_ALIAS: index.images.name, SENTENCES_ALIAS: index.sentences.name})
        with self._live_lock:
            self._live = (model_version, time.monotonic())

    def switched_from(self, model_version: str) -> VersionIndex | None:
        live = self.live_version(fresh=True)
        if live == model_version:
            return None
        if live not in self._opened:
            log.warning("live version %s is not opened here: left to the upgrade", live)
            return None
        return self._opened[live]

    def versions(self) -> list[str]:
        self.check_open()
        found = (version_of(n) for n in self._collections())
        return sorted(v for v in found if v is not None)

    def drop_version(self, model_version: str) -> None:
        names = collection_names(model_version)
        if model_version == self.live_version(fresh=True):
            raise ValueError(f"model version {model_version!r} is live: switch away first")
        self._opened.pop(model_version, None)
        existing = set(self._collections())
        for name in names:
            if name in existing:
                self._drop(name)

    def _require_opened(self) -> None:
        self.check_open()
        if not self._opened:
            raise StoreUnavailable("store is not opened: call open(model_version, dim) first")

    # -- sources ----------------------------------------------------------------------------

    def put_sources(self, items: Sequence[Source]) -> None:
        self._require_opened()
        points: list[PointData] = []
        for item in items:
            check_id(item.id)
            if item.kind not in ("image", "sentence"):
                raise ValueError(f"source {item.id!r}: kind must be image or sentence")
            pid = source_point_id(item.kind, item.id)
            points.append((pid, {SOURCE_VECTOR: _PLACEHOLDER}, item.to_payload()))
        check_unique([p[0] for p in points])
        if points:
            self._upsert(SOURCES, points)

    def get_sources(self, kind: SourceKind, ids: Sequence[str]) -> list[Source | None]:
        self._require_opened()
        pids = [source_point_id(kind, i) for i in check_ids(ids)]
        found = self._retrieve(SOURCES, SOURCE_VECTOR, list(dict.fromkeys(pids)), True, False)
        return [Source.from_payload(found[p][1]) if p in found else None for p in pids]

    def _delete_sources(self, kind: SourceKind, ids: Sequence[str]) -> list[str]:
        """Delete sources; returns the ids that had none."""
        self._require_opened()
        checked = list(dict.fromkeys(check_ids(ids)))
        by_pid = {source_point_id(kind, i): i for i in checked}
        present = self._retrieve(SOURCES, SOURCE_VECTOR, list(by_pid), False, False)
        if present:
            self._delete(SOURCES, list(present))
        return [i for pid, i in by_pid.items() if pid not in present]

    def delete_everywhere(self, kind: SourceKind, ids: Sequence[str]) -> list[str]:
        missing = set(self._delete_sources(kind, ids))
        live = self.live_version()
        stored = set(self.versions())
        for version, index in list(self._opened.items()):
            if version == live or version in stored:  # skip one another process dropped
                missing &= set(index.of(kind).delete(ids))
        return [i for i in dict.fromkeys(ids) if i in missing]

    def source_revisions(self, kind: SourceKind) -> dict[str, str]:
        self._require_opened()
        return {
            str(p[KEY_ID]): str(p.get(KEY_REV, ""))
            for p in self._scroll(SOURCES, [KEY_ID, KEY_KIND, KEY_REV], self.SCROLL_BATCH)
            if p.get(KEY_KIND) == kind
        }

    def count_sources(self, kind: SourceKind) -> int:
        self._require_opened()
        return self._count(SOURCES, [[MatchAtom(KEY_KIND, "value", kind)]])

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()
