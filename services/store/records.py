"""What the store holds (images, sentences, their sources) and how each becomes a Qdrant point.

Images are sets of L2-normalised region vectors and sentences sets of word vectors; both become
multivector points whose payload carries the caller's fields beside the store's own (`_id`,
`_rev`, ...). `IMAGES` and `SENTENCES` describe the two kinds so that one code path serves both.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from .filters import RESERVED_PREFIX
from .naming import IMAGE_VECTOR, SENTENCE_VECTOR, SourceKind

KEY_ID, KEY_URI, KEY_BOXES, KEY_TEXT, KEY_TOKENS = "_id", "_uri", "_boxes", "_text", "_tokens"
KEY_REV = "_rev"
"""Revision of the source an indexed point was made from: an index is current where it matches."""
KEY_KIND, KEY_IMAGE, KEY_FEATURES = "_kind", "_image", "_features"

NORM_TOLERANCE = 1e-3
"""Stored vectors must have |norm - 1| below this: dot-product MaxSim equals MrSw only then."""


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


Item = TypeVar("Item", StoredImage, StoredSentence)


@dataclass(frozen=True)
class Hit(Generic[Item]):
    """A search result: the caller's id, its score (higher is better) and, when asked for,
    the stored item itself."""

    id: str
    score: float
    item: Item | None = None


def new_rev() -> str:
    """A fresh source revision: compared for equality only, so no clock is involved."""
    return uuid.uuid4().hex


def check_id(item_id: object) -> str:
    if not isinstance(item_id, str) or not item_id:
        raise ValueError(f"ids must be non-empty strings, got {item_id!r}")
    return item_id


def check_ids(ids: Sequence[str]) -> list[str]:
    if isinstance(ids, str):
        raise ValueError("ids must be a sequence of strings, not one string")
    return [check_id(i) for i in ids]


def check_unique(ids: list[str]) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"id {i!r} appears twice in one upsert")
        seen.add(i)


def check_user_payload(item_id: str, payload: object) -> dict[str, Any]:
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


def user_payload(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if not k.startswith(RESERVED_PREFIX)}


def check_vectors(what: str, v: np.ndarray, dim: int, *, normalised: bool) -> np.ndarray:
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


@dataclass(frozen=True)
class Kind(Generic[Item]):
    """One kind of indexed item: its multivector's name and its point encoding both ways."""

    name: SourceKind
    vector: str
    to_point: Callable[[Item, int], tuple[np.ndarray, dict[str, Any]]]
    """(validated multivector, full payload) of an item for a `dim`-d collection."""
    from_point: Callable[[np.ndarray | None, dict[str, Any]], Item]


def _image_point(item: StoredImage, dim: int) -> tuple[np.ndarray, dict[str, Any]]:
    item_id = check_id(item.id)
    regions = check_vectors(f"image {item_id!r} regions", item.regions, dim, normalised=True)
    if item.boxes.shape != (regions.shape[0], 4) or not np.isfinite(item.boxes).all():
        raise ValueError(
            f"image {item_id!r}: boxes must be finite [{regions.shape[0]}, 4], "
            f"got {list(item.boxes.shape)}"
        )
    if not isinstance(item.uri, str):
        raise ValueError(f"image {item_id!r}: uri must be a string")
    payload = {
        **check_user_payload(item_id, item.payload),
        KEY_ID: item_id,
        KEY_URI: item.uri,
        KEY_BOXES: item.boxes.tolist(),
        KEY_REV: item.rev,
    }
    return regions, payload


def _image_record(vectors: np.ndarray | None, payload: dict[str, Any]) -> StoredImage:
    return StoredImage(
        id=payload[KEY_ID],
        regions=vectors if vectors is not None else np.zeros((0, 0), np.float32),
        boxes=np.asarray(payload.get(KEY_BOXES, []), dtype=np.float32).reshape(-1, 4),
        uri=payload.get(KEY_URI, ""),
        payload=user_payload(payload),
        rev=payload.get(KEY_REV, ""),
    )


def _sentence_point(item: StoredSentence, dim: int) -> tuple[np.ndarray, dict[str, Any]]:
    item_id = check_id(item.id)
    words = check_vectors(f"sentence {item_id!r} words", item.words, dim, normalised=True)
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
        **check_user_payload(item_id, item.payload),
        KEY_ID: item_id,
        KEY_TEXT: item.text,
        KEY_TOKENS: list(tokens),
        KEY_REV: item.rev,
    }
    return words, payload


def _sentence_record(vectors: np.ndarray | None, payload: dict[str, Any]) -> StoredSentence:
    return StoredSentence(
        id=payload[KEY_ID],
        text=payload.get(KEY_TEXT, ""),
        words=vectors if vectors is not None else np.zeros((0, 0), np.float32),
        tokens=list(payload.get(KEY_TOKENS, [])),
        payload=user_payload(payload),
        rev=payload.get(KEY_REV, ""),
    )


IMAGES: Kind[StoredImage] = Kind("image", IMAGE_VECTOR, _image_point, _image_record)
SENTENCES: Kind[StoredSentence] = Kind(
    "sentence", SENTENCE_VECTOR, _sentence_point, _sentence_record
)


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
            **check_user_payload(self.id, self.payload),
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
            payload=user_payload(payload),
        )
