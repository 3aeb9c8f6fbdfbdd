"""The vector-store interface the services depend on, and the logic every backend shares.

Images are stored as sets of L2-normalised region vectors and sentences as sets of word vectors
(multivectors). A sentence query scores images with Qdrant's MaxSim (sum over query vectors of
the max dot product over stored vectors), which on normalised vectors is TERAN's MrSw score, so
the store's ranking is the model's ranking, not an approximation of it.

Every item's source (the picture or region features an image came from, a sentence's text) is
kept in one version-independent collection, the system of record. Each model version's
collections are indexes derived from it, and the aliases `teran_images` / `teran_sentences` name
the live version: a new model is rolled out by deriving its indexes from the sources and then
switching both aliases at once (`services.upgrade`), so a reader never mixes versions.

Backends implement a handful of per-collection primitives (`MultiVectorStore`); id mapping,
payload layout, validation and filter translation live here so that they cannot drift apart.
"""

from __future__ import annotations

import base64
import logging
import math
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

log = logging.getLogger(__name__)

Scalar = str | int | float | bool
"""Payload values a filter can compare against (Qdrant matches keyword, integer and bool)."""

ID_NAMESPACE = uuid.UUID("6f1c1e0a-7d4b-5c8e-9a53-2b7f0d4e8c11")
"""Fixed uuid5 namespace: the same string id maps to the same point id in every process."""

RESERVED_PREFIX = "_"
KEY_ID, KEY_URI, KEY_BOXES, KEY_TEXT, KEY_TOKENS = "_id", "_uri", "_boxes", "_text", "_tokens"
KEY_REV = "_rev"
"""Revision of the source an indexed point was made from: an index is current where it matches."""
KEY_KIND, KEY_IMAGE, KEY_FEATURES = "_kind", "_image", "_features"

IMAGE_VECTOR, SENTENCE_VECTOR, SOURCE_VECTOR = "regions", "words", "source"
"""Vector names inside the image, sentence and source collections."""

IMAGES_ALIAS, SENTENCES_ALIAS = "teran_images", "teran_sentences"
"""Aliases naming the live model version's collections."""
SOURCES = "teran_sources"
"""The version-independent collection of sources (a 1-d placeholder vector per point)."""
_IMAGES_PREFIX, _SENTENCES_PREFIX = "teran_images__", "teran_sentences__"
_PLACEHOLDER = np.ones((1, 1), dtype=np.float32)

SourceKind = Literal["image", "sentence"]

NORM_TOLERANCE = 1e-3
"""Stored vectors must have |norm - 1| below this: dot-product MaxSim equals MrSw only then."""

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MAX_INT = 2**63


class StoreError(Exception):
    """A store operation failed for a reason other than bad input (ValueError)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or is closed; services map this to gRPC UNAVAILABLE."""


@dataclass(eq=False)
class StoredImage:
    """One image: its region vectors [R, D], region boxes [R, 4], source uri and user payload."""

    id: str
    regions: np.ndarray
    boxes: np.ndarray
    uri: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    rev: str = ""
    """The revision of the `Source` these vectors were made from."""

    def __post_init__(self) -> None:
        self.regions = np.ascontiguousarray(self.regions, dtype=np.float32)
        self.boxes = np.ascontiguousarray(self.boxes, dtype=np.float32)


@dataclass(eq=False)
class StoredSentence:
    """One sentence: its text, word vectors [W, D], the W tokens they belong to, user payload."""

    id: str
    text: str
    words: np.ndarray
    tokens: list[str]
    payload: dict[str, Any] = field(default_factory=dict)
    rev: str = ""

    def __post_init__(self) -> None:
        self.words = np.ascontiguousarray(self.words, dtype=np.float32)


def new_rev() -> str:
    """A fresh source revision: compared for equality only, so no clock is involved."""
    return uuid.uuid4().hex


@dataclass(eq=False)
class Source:
    """What an item was made from, kept so that another model version can re-encode it.

    An image has `image` (the encoded picture) or `features` [R, F] with `boxes` [R, 4]
    (precomputed regions); a sentence has `text`.
    """

    id: str
    kind: SourceKind
    rev: str
    image: bytes | None = None
    features: np.ndarray | None = None
    boxes: np.ndarray | None = None
    text: str | None = None
    uri: str = ""
    payload: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **_check_user_payload(self.id, self.payload),
            KEY_ID: self.id,
            KEY_KIND: self.kind,
            KEY_REV: self.rev,
            KEY_URI: self.uri,
        }
        if self.kind == "sentence":
            if not isinstance(self.text, str):
                raise ValueError(f"sentence source {self.id!r} needs its text")
            out[KEY_TEXT] = self.text
        elif self.image is not None:
            out[KEY_IMAGE] = base64.b64encode(self.image).decode("ascii")
        elif self.features is not None and self.boxes is not None:
            features = np.ascontiguousarray(self.features, dtype=np.float32)
            if features.ndim != 2 or self.boxes.shape != (features.shape[0], 4):
                raise ValueError(f"image source {self.id!r}: features [R, F] need boxes [R, 4]")
            data = base64.b64encode(features.tobytes()).decode("ascii")
            out[KEY_FEATURES] = [features.shape[1], data]
            out[KEY_BOXES] = np.asarray(self.boxes, dtype=np.float32).tolist()
        else:
            raise ValueError(f"image source {self.id!r} needs an image or features with boxes")
        return out

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Source:
        kind = payload[KEY_KIND]
        features = boxes = None
        if KEY_FEATURES in payload:
            width, data = payload[KEY_FEATURES]
            features = np.frombuffer(base64.b64decode(data), dtype=np.float32).reshape(-1, width)
            boxes = np.asarray(payload[KEY_BOXES], dtype=np.float32).reshape(-1, 4)
        image = payload.get(KEY_IMAGE)
        return cls(
            id=payload[KEY_ID],
            kind=kind,
            rev=payload[KEY_REV],
            image=base64.b64decode(image) if image is not None else None,
            features=features,
            boxes=boxes,
            text=payload.get(KEY_TEXT) if kind == "sentence" else None,
            uri=payload.get(KEY_URI, ""),
            payload=_user_payload(payload),
        )


@dataclass(frozen=True)
class Hit:
    """A search result: the caller's id and its MaxSim score (higher is better)."""

    id: str
    score: float


@dataclass(frozen=True)
class Equals:
    """Condition: payload[key] == value."""

    key: str
    value: Scalar


@dataclass(frozen=True)
class AnyOf:
    """Condition: payload[key] is one of values."""

    key: str
    values: tuple[Scalar, ...]

    def __init__(self, key: str, values: Sequence[Scalar]) -> None:
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "values", tuple(values) if _is_sequence(values) else values)


Condition = Equals | AnyOf


@dataclass(frozen=True)
class PayloadFilter:
    """Conditions on user payload, all of which must hold (AND).

    Validated on construction so a bad filter from a request fails as ValueError naming the
    condition, before any backend sees it.
    """

    conditions: tuple[Condition, ...] = ()

    def __init__(self, conditions: Sequence[Condition] = ()) -> None:
        if not _is_sequence(conditions):
            raise ValueError(f"PayloadFilter takes a sequence of conditions, got {conditions!r}")
        conds = tuple(conditions)
        for i, cond in enumerate(conds):
            problem = _condition_problem(cond)
            if problem is not None:
                raise ValueError(f"bad filter condition #{i} {cond!r}: {problem}")
        object.__setattr__(self, "conditions", conds)


def _is_sequence(x: object) -> bool:
    return isinstance(x, Sequence) and not isinstance(x, str | bytes)


def _scalar_problem(v: object) -> str | None:
    if isinstance(v, bool | str):
        return None
    if isinstance(v, int):
        return None if -_MAX_INT <= v < _MAX_INT else f"integer {v} does not fit in int64"
    if isinstance(v, float):
        return None if math.isfinite(v) else f"value {v} is not finite"
    return f"value {v!r} is not str, int, float or bool"


def _condition_problem(cond: object) -> str | None:
    if not isinstance(cond, Equals | AnyOf):
        return "not an Equals or AnyOf condition"
    if not isinstance(cond.key, str) or not cond.key:
        return "key must be a non-empty string"
    if cond.key.startswith(RESERVED_PREFIX):
        return f"keys starting with {RESERVED_PREFIX!r} are reserved for the store"
    if isinstance(cond, Equals):
        return _scalar_problem(cond.value)
    if not isinstance(cond.values, tuple) or not cond.values:
        return "any_of needs a non-empty list of values"
    for v in cond.values:
        problem = _scalar_problem(v)
        if problem is not None:
            return problem
    return None


@dataclass(frozen=True)
class MatchAtom:
    """Backend-neutral leaf: `value` match, `any` match (one type), or float `range` equality."""

    key: str
    kind: Literal["value", "any", "range"]
    value: Any


def filter_clauses(flt: PayloadFilter) -> list[list[MatchAtom]]:
    """AND of ORs of atoms each backend can express.

    Qdrant matches only str/int/bool and MatchAny only one of str or int lists, so floats become
    a closed range and mixed any_of lists become an OR of one atom per type.
    """
    clauses: list[list[MatchAtom]] = []
    for cond in flt.conditions:
        if isinstance(cond, Equals):
            clauses.append([_atom(cond.key, cond.value)])
            continue
        strs = [v for v in cond.values if isinstance(v, str)]
        ints = [v for v in cond.values if isinstance(v, int) and not isinstance(v, bool)]
        others = [v for v in cond.values if isinstance(v, bool | float)]
        ors: list[MatchAtom] = []
        if strs:
            ors.append(MatchAtom(cond.key, "any", strs))
        if ints:
            ors.append(MatchAtom(cond.key, "any", ints))
        ors.extend(_atom(cond.key, v) for v in dict.fromkeys(others))
        clauses.append(ors)
    return clauses


def _atom(key: str, v: Scalar) -> MatchAtom:
    if isinstance(v, float):
        return MatchAtom(key, "range", v)
    return MatchAtom(key, "value", v)


def point_id(item_id: str) -> str:
    """Qdrant point id for a caller id: uuid5 keeps arbitrary strings valid and stable."""
    return str(uuid.uuid5(ID_NAMESPACE, item_id))


def source_point_id(kind: SourceKind, item_id: str) -> str:
    """Sources of images and sentences share a collection but not an id space."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{kind}:{item_id}"))


def collection_names(model_version: str) -> tuple[str, str]:
    """(images, sentences) collection names: one pair per model so embeddings never mix."""
    if not isinstance(model_version, str) or not _VERSION_RE.match(model_version):
        raise ValueError(
            f"model_version {model_version!r} must match {_VERSION_RE.pattern} "
            "(it names collections and folders)"
        )
    return f"{_IMAGES_PREFIX}{model_version}", f"{_SENTENCES_PREFIX}{model_version}"


def version_of(collection: str) -> str | None:
    """The model version an image collection belongs to (None for other collections)."""
    if collection.startswith(_IMAGES_PREFIX):
        return collection[len(_IMAGES_PREFIX) :]
    return None


def _check_id(item_id: object) -> str:
    if not isinstance(item_id, str) or not item_id:
        raise ValueError(f"ids must be non-empty strings, got {item_id!r}")
    return item_id


def _check_ids(ids: Sequence[str]) -> list[str]:
    if isinstance(ids, str):
        raise ValueError("ids must be a sequence of strings, not one string")
    return [_check_id(i) for i in ids]


def _check_unique(ids: list[str]) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"id {i!r} appears twice in one upsert")
        seen.add(i)


def _check_user_payload(item_id: str, payload: object) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ValueError(f"{item_id!r}: payload must be a dict, got {type(payload).__name__}")
    for key in payload:
        if not isinstance(key, str) or not key:
            raise ValueError(f"{item_id!r}: payload keys must be non-empty strings, got {key!r}")
        if key.startswith(RESERVED_PREFIX):
            raise ValueError(
                f"{item_id!r}: payload key {key!r} is reserved "
                f"(keys starting with {RESERVED_PREFIX!r} belong to the store)"
            )
    return payload


def _check_vectors(what: str, v: np.ndarray, dim: int, *, normalised: bool) -> np.ndarray:
    if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] != dim:
        raise ValueError(f"{what}: expected shape [n >= 1, {dim}], got {list(v.shape)}")
    if not np.isfinite(v).all():
        raise ValueError(f"{what}: vectors contain NaN or inf")
    if normalised:
        norms = np.linalg.norm(v, axis=1)
        worst = float(np.abs(norms - 1.0).max())
        if worst > NORM_TOLERANCE:
            raise ValueError(
                f"{what}: vectors must be L2-normalised (max |norm - 1| = {worst:.3g}); "
                "MaxSim over dot products is MrSw only for unit vectors"
            )
    return v


def _user_payload(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if not k.startswith(RESERVED_PREFIX)}


PointData = tuple[str, np.ndarray, dict[str, Any]]
"""(point id, multivector [n, D] float32, full payload) as handed to a backend."""


def records_by_id(
    records: Sequence[Any], vector_name: str
) -> dict[str, tuple[np.ndarray | None, dict[str, Any]]]:
    """Retrieved points (qdrant-client's or qdrant-edge's records) by point id."""
    out: dict[str, tuple[np.ndarray | None, dict[str, Any]]] = {}
    for rec in records:
        vec = rec.vector.get(vector_name) if isinstance(rec.vector, dict) else None
        arr = np.asarray(vec, dtype=np.float32) if vec is not None else None
        out[str(rec.id)] = (arr, dict(rec.payload or {}))
    return out


class VectorStore(ABC):
    """What services need from storage: sources, versioned indexes and the live alias.

    Index operations take `version`, the model version whose collections to use; None means
    the live one. A request resolves the live version once (`live_version`) and passes it to
    every call, so its query vectors and the stored vectors always come from one model.
    """

    # -- versions -----------------------------------------------------------------------------

    @abstractmethod
    def open(self, model_version: str, dim: int) -> None:
        """Create or open this version's collections (and the sources); ValueError if `dim`
        disagrees. The first version opened in an empty store becomes live."""

    @abstractmethod
    def live_version(self, fresh: bool = False) -> str:
        """The version the aliases name (cached briefly unless `fresh`)."""

    @abstractmethod
    def switch_live(self, model_version: str) -> None:
        """Point both aliases at an opened version, atomically."""

    @abstractmethod
    def switched_from(self, model_version: str) -> str | None:
        """The live version, read fresh, when an upgrade moved it away from `model_version` and
        it is opened here: a writer that just wrote into `model_version` writes there too.
        None otherwise (a version not opened here is left to the upgrade's catch-up pass)."""

    @abstractmethod
    def versions(self) -> list[str]:
        """Model versions with collections in the store, opened here or not."""

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
    def index_revisions(self, kind: SourceKind, version: str) -> dict[str, str]:
        """{id: rev} of every point in `version`'s image or sentence collection."""

    # -- indexes ------------------------------------------------------------------------------

    @abstractmethod
    def upsert_images(self, items: Sequence[StoredImage], version: str | None = None) -> None:
        """Insert or overwrite by id; durable once it returns."""

    @abstractmethod
    def get_images(
        self, ids: Sequence[str], version: str | None = None
    ) -> list[StoredImage | None]:
        """Images in `ids` order (None where absent), with vectors for exact re-scoring."""

    @abstractmethod
    def search_images(
        self,
        words: np.ndarray,
        limit: int,
        filter: PayloadFilter | None = None,
        version: str | None = None,
    ) -> list[Hit]:
        """Exact MaxSim of the query words against stored regions, best first."""

    @abstractmethod
    def delete_images(self, ids: Sequence[str], version: str | None = None) -> list[str]:
        """Delete from one version's index (None: live); returns the ids it did not hold."""

    @abstractmethod
    def upsert_sentences(self, items: Sequence[StoredSentence], version: str | None = None) -> None:
        """Insert or overwrite by id; durable once it returns."""

    @abstractmethod
    def get_sentences(
        self, ids: Sequence[str], version: str | None = None
    ) -> list[StoredSentence | None]:
        """Sentences in `ids` order (None where absent)."""

    @abstractmethod
    def search_sentences(
        self,
        regions: np.ndarray,
        limit: int,
        filter: PayloadFilter | None = None,
        version: str | None = None,
    ) -> list[Hit]:
        """Exact MaxSim of the query regions against stored words, best first."""

    @abstractmethod
    def delete_sentences(self, ids: Sequence[str], version: str | None = None) -> list[str]:
        """Delete from one version's index (None: live); returns the ids it did not hold."""

    @abstractmethod
    def count_images(self, version: str | None = None) -> int:
        """Number of stored images."""

    @abstractmethod
    def count_sentences(self, version: str | None = None) -> int:
        """Number of stored sentences."""

    @abstractmethod
    def delete_everywhere(self, kind: SourceKind, ids: Sequence[str]) -> list[str]:
        """Delete items for good: their sources, then their points in every opened version.
        Returns the ids stored nowhere."""

    @abstractmethod
    def opened_versions(self) -> list[str]:
        """Versions opened by this process."""

    @abstractmethod
    def close(self) -> None:
        """Release the backend; later calls raise StoreUnavailable."""

    @abstractmethod
    def healthy(self) -> bool:
        """True when the backend answers (for readiness probes); never raises."""


class MultiVectorStore(VectorStore):
    """`VectorStore` on top of per-collection primitives that each Qdrant backend provides."""

    MAX_LIMIT = 10_000
    SCROLL_BATCH = 1024

    def __init__(self, alias_ttl_s: float = 1.0) -> None:
        self._opened: dict[str, tuple[str, str, int]] = {}
        self._closed = False
        self.alias_ttl_s = alias_ttl_s
        self._live: tuple[str, float] | None = None
        self._live_lock = threading.Lock()

    # -- primitives -------------------------------------------------------------------------

    @abstractmethod
    def _open_collection(self, name: str, vector_name: str, dim: int) -> None:
        """Create `name` if missing; ValueError if it exists with another vector config."""

    @abstractmethod
    def _upsert(self, name: str, vector_name: str, points: list[PointData]) -> None:
        """Write points durably (returns only once they survive a process crash)."""

    @abstractmethod
    def _retrieve(
        self, name: str, vector_name: str, pids: list[str], with_vectors: bool
    ) -> dict[str, tuple[np.ndarray | None, dict[str, Any]]]:
        """Stored points by point id (absent ids omitted); full payload only with vectors."""

    @abstractmethod
    def _query(
        self,
        name: str,
        vector_name: str,
        query: np.ndarray,
        limit: int,
        clauses: list[list[MatchAtom]],
    ) -> list[tuple[dict[str, Any], float]]:
        """Exact MaxSim top-`limit` as (payload with KEY_ID, score), best first."""

    @abstractmethod
    def _delete(self, name: str, pids: list[str]) -> None:
        """Delete points by id, durably."""

    @abstractmethod
    def _count(self, name: str, clauses: list[list[MatchAtom]] | None = None) -> int:
        """Exact number of points (matching `clauses`, an AND of ORs, when given)."""

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

    # -- versions ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("store is closed")

    def open(self, model_version: str, dim: int) -> None:
        self._check_open()
        images, sentences = collection_names(model_version)
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self._open_collection(SOURCES, SOURCE_VECTOR, 1)
        self._open_collection(images, IMAGE_VECTOR, dim)
        self._open_collection(sentences, SENTENCE_VECTOR, dim)
        self._opened[model_version] = (images, sentences, dim)
        if self._get_alias(IMAGES_ALIAS) is None:
            self._set_aliases({IMAGES_ALIAS: images, SENTENCES_ALIAS: sentences})

    def opened_versions(self) -> list[str]:
        return list(self._opened)

    def live_version(self, fresh: bool = False) -> str:
        self._check_open()
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
        images, sentences, _ = self._ready(model_version)
        self._set_aliases({IMAGES_ALIAS: images, SENTENCES_ALIAS: sentences})
        with self._live_lock:
            self._live = (model_version, time.monotonic())

    def switched_from(self, model_version: str) -> str | None:
        live = self.live_version(fresh=True)
        if live == model_version:
            return None
        if live not in self._opened:
            log.warning("live version %s is not opened here: left to the upgrade", live)
            return None
        return live

    def versions(self) -> list[str]:
        self._check_open()
        found = (version_of(n) for n in self._collections())
        return sorted(v for v in found if v is not None)

    def drop_version(self, model_version: str) -> None:
        images, sentences = collection_names(model_version)
        if model_version == self.live_version(fresh=True):
            raise ValueError(f"model version {model_version!r} is live: switch away first")
        self._opened.pop(model_version, None)
        existing = set(self._collections())
        for name in (images, sentences):
            if name in existing:
                self._drop(name)

    def _require_opened(self) -> None:
        self._check_open()
        if not self._opened:
            raise StoreUnavailable("store is not opened: call open(model_version, dim) first")

    def _ready(self, version: str | None) -> tuple[str, str, int]:
        self._require_opened()
        version = version if version is not None else self.live_version()
        opened = self._opened.get(version)
        if opened is None:
            raise StoreUnavailable(
                f"model version {version!r} is not opened here (opened: {list(self._opened)})"
            )
        return opened

    # -- sources ----------------------------------------------------------------------------

    def put_sources(self, items: Sequence[Source]) -> None:
        self._require_opened()
        points: list[PointData] = []
        for item in items:
            _check_id(item.id)
            if item.kind not in ("image", "sentence"):
                raise ValueError(f"source {item.id!r}: kind must be image or sentence")
            points.append((source_point_id(item.kind, item.id), _PLACEHOLDER, item.to_payload()))
        _check_unique([p[0] for p in points])
        if points:
            self._upsert(SOURCES, SOURCE_VECTOR, points)

    def get_sources(self, kind: SourceKind, ids: Sequence[str]) -> list[Source | None]:
        self._require_opened()
        checked = _check_ids(ids)
        pids = [source_point_id(kind, i) for i in checked]
        found = self._retrieve(SOURCES, SOURCE_VECTOR, list(dict.fromkeys(pids)), True)
        return [Source.from_payload(found[p][1]) if p in found else None for p in pids]

    def _delete_sources(self, kind: SourceKind, ids: Sequence[str]) -> list[str]:
        """Delete sources; returns the ids that had none."""
        self._require_opened()
        checked = list(dict.fromkeys(_check_ids(ids)))
        by_pid = {source_point_id(kind, i): i for i in checked}
        present = self._retrieve(SOURCES, SOURCE_VECTOR, list(by_pid), False)
        if present:
            self._delete(SOURCES, list(present))
        return [i for pid, i in by_pid.items() if pid not in present]

    def delete_everywhere(self, kind: SourceKind, ids: Sequence[str]) -> list[str]:
        missing = set(self._delete_sources(kind, ids))
        live = self.live_version()
        stored = set(self.versions())
        delete = self.delete_images if kind == "image" else self.delete_sentences
        for version in self.opened_versions():
            if version == live or version in stored:  # skip one another process dropped
                missing &= set(delete(ids, version))
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

    def index_revisions(self, kind: SourceKind, version: str) -> dict[str, str]:
        images, sentences, _ = self._ready(version)
        name = images if kind == "image" else sentences
        return {
            str(p[KEY_ID]): str(p.get(KEY_REV, ""))
            for p in self._scroll(name, [KEY_ID, KEY_REV], self.SCROLL_BATCH)
        }

    # -- indexes ----------------------------------------------------------------------------

    def upsert_images(self, items: Sequence[StoredImage], version: str | None = None) -> None:
        images, _, dim = self._ready(version)
        points: list[PointData] = []
        for item in items:
            item_id = _check_id(item.id)
            what = f"image {item_id!r} regions"
            regions = _check_vectors(what, item.regions, dim, normalised=True)
            if item.boxes.shape != (regions.shape[0], 4) or not np.isfinite(item.boxes).all():
                raise ValueError(
                    f"image {item_id!r}: boxes must be finite [{regions.shape[0]}, 4], "
                    f"got {list(item.boxes.shape)}"
                )
            if not isinstance(item.uri, str):
                raise ValueError(f"image {item_id!r}: uri must be a string")
            payload = {
                **_check_user_payload(item_id, item.payload),
                KEY_ID: item_id,
                KEY_URI: item.uri,
                KEY_BOXES: item.boxes.tolist(),
                KEY_REV: item.rev,
            }
            points.append((point_id(item_id), regions, payload))
        _check_unique([p[2][KEY_ID] for p in points])
        if points:
            self._upsert(images, IMAGE_VECTOR, points)

    def upsert_sentences(self, items: Sequence[StoredSentence], version: str | None = None) -> None:
        _, sentences, dim = self._ready(version)
        points: list[PointData] = []
        for item in items:
            item_id = _check_id(item.id)
            words = _check_vectors(f"sentence {item_id!r} words", item.words, dim, normalised=True)
            tokens = item.tokens
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise ValueError(f"sentence {item_id!r}: tokens must be a list of strings")
            if len(tokens) != words.shape[0]:
                raise ValueError(
                    f"sentence {item_id!r}: {len(tokens)} tokens for {words.shape[0]} word "
                    "vectors (explanations pair them one to one)"
                )
            if not isinstance(item.text, str):
                raise ValueError(f"sentence {item_id!r}: text must be a string")
            payload = {
                **_check_user_payload(item_id, item.payload),
                KEY_ID: item_id,
                KEY_TEXT: item.text,
                KEY_TOKENS: list(tokens),
                KEY_REV: item.rev,
            }
            points.append((point_id(item_id), words, payload))
        _check_unique([p[2][KEY_ID] for p in points])
        if points:
            self._upsert(sentences, SENTENCE_VECTOR, points)

    def get_images(
        self, ids: Sequence[str], version: str | None = None
    ) -> list[StoredImage | None]:
        images, _, _ = self._ready(version)
        found = self._get(images, IMAGE_VECTOR, ids)
        out: list[StoredImage | None] = []
        for rec in found:
            if rec is None:
                out.append(None)
                continue
            vec, payload = rec
            out.append(
                StoredImage(
                    id=payload[KEY_ID],
                    regions=vec,
                    boxes=np.asarray(payload.get(KEY_BOXES, []), dtype=np.float32).reshape(-1, 4),
                    uri=payload.get(KEY_URI, ""),
                    payload=_user_payload(payload),
                    rev=payload.get(KEY_REV, ""),
                )
            )
        return out

    def get_sentences(
        self, ids: Sequence[str], version: str | None = None
    ) -> list[StoredSentence | None]:
        _, sentences, _ = self._ready(version)
        found = self._get(sentences, SENTENCE_VECTOR, ids)
        out: list[StoredSentence | None] = []
        for rec in found:
            if rec is None:
                out.append(None)
                continue
            vec, payload = rec
            out.append(
                StoredSentence(
                    id=payload[KEY_ID],
                    text=payload.get(KEY_TEXT, ""),
                    words=vec,
                    tokens=list(payload.get(KEY_TOKENS, [])),
                    payload=_user_payload(payload),
                    rev=payload.get(KEY_REV, ""),
                )
            )
        return out

    def _get(
        self, name: str, vector_name: str, ids: Sequence[str]
    ) -> list[tuple[np.ndarray, dict[str, Any]] | None]:
        checked = _check_ids(ids)
        if not checked:
            return []
        pids = [point_id(i) for i in checked]
        found = self._retrieve(name, vector_name, list(dict.fromkeys(pids)), True)
        out: list[tuple[np.ndarray, dict[str, Any]] | None] = []
        for pid in pids:
            rec = found.get(pid)
            if rec is None or rec[0] is None:
                out.append(None)
            else:
                out.append((np.asarray(rec[0], dtype=np.float32), rec[1]))
        return out

    def search_images(
        self,
        words: np.ndarray,
        limit: int,
        filter: PayloadFilter | None = None,
        version: str | None = None,
    ) -> list[Hit]:
        images, _, dim = self._ready(version)
        return self._search(images, IMAGE_VECTOR, "query words", words, dim, limit, filter)

    def search_sentences(
        self,
        regions: np.ndarray,
        limit: int,
        filter: PayloadFilter | None = None,
        version: str | None = None,
    ) -> list[Hit]:
        _, sentences, dim = self._ready(version)
        return self._search(
            sentences, SENTENCE_VECTOR, "query regions", regions, dim, limit, filter
        )

    def _search(
        self,
        name: str,
        vector_name: str,
        what: str,
        query: np.ndarray,
        dim: int,
        limit: int,
        flt: PayloadFilter | None,
    ) -> list[Hit]:
        q = _check_vectors(
            what, np.ascontiguousarray(query, dtype=np.float32), dim, normalised=False
        )
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= self.MAX_LIMIT
        ):
            raise ValueError(f"limit must be an integer in [1, {self.MAX_LIMIT}], got {limit!r}")
        if flt is not None and not isinstance(flt, PayloadFilter):
            raise ValueError(f"filter must be a PayloadFilter, got {type(flt).__name__}")
        clauses = filter_clauses(flt) if flt is not None else []
        rows = self._query(name, vector_name, q, limit, clauses)
        return [Hit(id=str(payload[KEY_ID]), score=float(score)) for payload, score in rows]

    def delete_images(self, ids: Sequence[str], version: str | None = None) -> list[str]:
        images, _, _ = self._ready(version)
        return self._delete_ids(images, IMAGE_VECTOR, ids)

    def delete_sentences(self, ids: Sequence[str], version: str | None = None) -> list[str]:
        _, sentences, _ = self._ready(version)
        return self._delete_ids(sentences, SENTENCE_VECTOR, ids)

    def _delete_ids(self, name: str, vector_name: str, ids: Sequence[str]) -> list[str]:
        checked = list(dict.fromkeys(_check_ids(ids)))
        if not checked:
            return []
        by_pid = {point_id(i): i for i in checked}
        present = self._retrieve(name, vector_name, list(by_pid), False)
        if present:
            self._delete(name, list(present))
        return [i for pid, i in by_pid.items() if pid not in present]

    def count_images(self, version: str | None = None) -> int:
        return self._count(self._ready(version)[0])

    def count_sentences(self, version: str | None = None) -> int:
        return self._count(self._ready(version)[1])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()
