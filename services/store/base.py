"""The vector-store interface the services depend on, and the logic every backend shares.

Images are stored as sets of L2-normalised region vectors and sentences as sets of word vectors
(multivectors). A sentence query scores images with Qdrant's MaxSim (sum over query vectors of
the max dot product over stored vectors), which on normalised vectors is TERAN's MrSw score, so
the store's ranking is the model's ranking, not an approximation of it.

Backends implement a handful of per-collection primitives (`MultiVectorStore`); id mapping,
payload layout, validation and filter translation live here so that they cannot drift apart.
"""

from __future__ import annotations

import math
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Scalar = str | int | float | bool
"""Payload values a filter can compare against (Qdrant matches keyword, integer and bool)."""

ID_NAMESPACE = uuid.UUID("6f1c1e0a-7d4b-5c8e-9a53-2b7f0d4e8c11")
"""Fixed uuid5 namespace: the same string id maps to the same point id in every process."""

RESERVED_PREFIX = "_"
KEY_ID, KEY_URI, KEY_BOXES, KEY_TEXT, KEY_TOKENS = "_id", "_uri", "_boxes", "_text", "_tokens"

IMAGE_VECTOR, SENTENCE_VECTOR = "regions", "words"
"""Vector names inside the image and sentence collections."""

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

    def __post_init__(self) -> None:
        self.words = np.ascontiguousarray(self.words, dtype=np.float32)


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


def collection_names(model_version: str) -> tuple[str, str]:
    """(images, sentences) collection names: one pair per model so embeddings never mix."""
    if not isinstance(model_version, str) or not _VERSION_RE.match(model_version):
        raise ValueError(
            f"model_version {model_version!r} must match {_VERSION_RE.pattern} "
            "(it names collections and folders)"
        )
    return f"teran_images__{model_version}", f"teran_sentences__{model_version}"


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
    """What services need from storage: versioned collections of images and sentences."""

    @abstractmethod
    def open(self, model_version: str, dim: int) -> None:
        """Create or open this model version's collections; ValueError if `dim` disagrees."""

    @abstractmethod
    def upsert_images(self, items: Sequence[StoredImage]) -> None:
        """Insert or overwrite by id; durable once it returns."""

    @abstractmethod
    def get_images(self, ids: Sequence[str]) -> list[StoredImage | None]:
        """Images in `ids` order (None where absent), with vectors for exact re-scoring."""

    @abstractmethod
    def search_images(
        self, words: np.ndarray, limit: int, filter: PayloadFilter | None = None
    ) -> list[Hit]:
        """Exact MaxSim of the query words against stored regions, best first."""

    @abstractmethod
    def delete_images(self, ids: Sequence[str]) -> list[str]:
        """Delete by id; returns the ids that were not stored."""

    @abstractmethod
    def upsert_sentences(self, items: Sequence[StoredSentence]) -> None:
        """Insert or overwrite by id; durable once it returns."""

    @abstractmethod
    def get_sentences(self, ids: Sequence[str]) -> list[StoredSentence | None]:
        """Sentences in `ids` order (None where absent)."""

    @abstractmethod
    def search_sentences(
        self, regions: np.ndarray, limit: int, filter: PayloadFilter | None = None
    ) -> list[Hit]:
        """Exact MaxSim of the query regions against stored words, best first."""

    @abstractmethod
    def delete_sentences(self, ids: Sequence[str]) -> list[str]:
        """Delete by id; returns the ids that were not stored."""

    @abstractmethod
    def count_images(self) -> int:
        """Number of stored images."""

    @abstractmethod
    def count_sentences(self) -> int:
        """Number of stored sentences."""

    @abstractmethod
    def close(self) -> None:
        """Release the backend; later calls raise StoreUnavailable."""

    @abstractmethod
    def healthy(self) -> bool:
        """True when the backend answers (for readiness probes); never raises."""


class MultiVectorStore(VectorStore):
    """`VectorStore` on top of per-collection primitives that each Qdrant backend provides."""

    MAX_LIMIT = 10_000

    def __init__(self) -> None:
        self._dim: int | None = None
        self._images: str | None = None
        self._sentences: str | None = None
        self._closed = False

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
        """Stored points by point id (absent ids omitted)."""

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
    def _count(self, name: str) -> int:
        """Exact number of points."""

    @abstractmethod
    def _close(self) -> None:
        """Release backend resources."""

    # -- interface --------------------------------------------------------------------------

    def open(self, model_version: str, dim: int) -> None:
        if self._closed:
            raise StoreUnavailable("store is closed")
        images, sentences = collection_names(model_version)
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self._open_collection(images, IMAGE_VECTOR, dim)
        self._open_collection(sentences, SENTENCE_VECTOR, dim)
        self._images, self._sentences, self._dim = images, sentences, dim

    def _ready(self) -> tuple[str, str, int]:
        if self._closed:
            raise StoreUnavailable("store is closed")
        if self._images is None or self._sentences is None or self._dim is None:
            raise StoreUnavailable("store is not opened: call open(model_version, dim) first")
        return self._images, self._sentences, self._dim

    def upsert_images(self, items: Sequence[StoredImage]) -> None:
        images, _, dim = self._ready()
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
            }
            points.append((point_id(item_id), regions, payload))
        _check_unique([p[2][KEY_ID] for p in points])
        if points:
            self._upsert(images, IMAGE_VECTOR, points)

    def upsert_sentences(self, items: Sequence[StoredSentence]) -> None:
        _, sentences, dim = self._ready()
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
            }
            points.append((point_id(item_id), words, payload))
        _check_unique([p[2][KEY_ID] for p in points])
        if points:
            self._upsert(sentences, SENTENCE_VECTOR, points)

    def get_images(self, ids: Sequence[str]) -> list[StoredImage | None]:
        images, _, _ = self._ready()
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
                )
            )
        return out

    def get_sentences(self, ids: Sequence[str]) -> list[StoredSentence | None]:
        _, sentences, _ = self._ready()
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
        self, words: np.ndarray, limit: int, filter: PayloadFilter | None = None
    ) -> list[Hit]:
        images, _, dim = self._ready()
        return self._search(images, IMAGE_VECTOR, "query words", words, dim, limit, filter)

    def search_sentences(
        self, regions: np.ndarray, limit: int, filter: PayloadFilter | None = None
    ) -> list[Hit]:
        _, sentences, dim = self._ready()
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

    def delete_images(self, ids: Sequence[str]) -> list[str]:
        images, _, _ = self._ready()
        return self._delete_ids(images, IMAGE_VECTOR, ids)

    def delete_sentences(self, ids: Sequence[str]) -> list[str]:
        _, sentences, _ = self._ready()
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

    def count_images(self) -> int:
        return self._count(self._ready()[0])

    def count_sentences(self) -> int:
        return self._count(self._ready()[1])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()
