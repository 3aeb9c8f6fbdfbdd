"""How items and model versions are named inside Qdrant: point ids, collections, aliases.

Every item's source lives in one version-independent collection (`teran_sources`, the system of
record); each model version has its own image and sentence collections derived from it, and the
aliases `teran_images` / `teran_sentences` name the live version's pair.
"""

from __future__ import annotations

import re
import uuid
from typing import Literal

SourceKind = Literal["image", "sentence"]

ID_NAMESPACE = uuid.UUID("6f1c1e0a-7d4b-5c8e-9a53-2b7f0d4e8c11")
"""Fixed uuid5 namespace: the same string id maps to the same point id in every process."""

IMAGE_VECTOR, SENTENCE_VECTOR, SOURCE_VECTOR = "regions", "words", "source"
"""Multivector names inside the image, sentence and source collections."""
SUMMARY_VECTOR = "pooled"
"""The small multivector per item (pooled centroids) that the first stage indexes with HNSW."""

IMAGES_ALIAS, SENTENCES_ALIAS = "teran_images", "teran_sentences"
"""Aliases naming the live model version's collections."""
SOURCES = "teran_sources"
"""The version-independent collection of sources (a 1-d placeholder vector per point)."""
PREFIXES: dict[SourceKind, str] = {"image": "teran_images__", "sentence": "teran_sentences__"}

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def point_id(item_id: str) -> str:
    """Qdrant point id for a caller id: uuid5 keeps arbitrary strings valid and stable."""
    return str(uuid.uuid5(ID_NAMESPACE, item_id))


def source_point_id(kind: SourceKind, item_id: str) -> str:
    """Sources of images and sentences share a collection but not an id space."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{kind}:{item_id}"))


def check_version(model_version: str) -> str:
    if not isinstance(model_version, str) or not _VERSION_RE.match(model_version):
        raise ValueError(
            f"model_version {model_version!r} must match {_VERSION_RE.pattern} "
            "(it names collections and folders)"
        )
    return model_version


def collection_name(kind: SourceKind, model_version: str) -> str:
    return f"{PREFIXES[kind]}{check_version(model_version)}"


def collection_names(model_version: str) -> tuple[str, str]:
    """(images, sentences) collection names: one pair per model so embeddings never mix."""
    return collection_name("image", model_version), collection_name("sentence", model_version)


def version_of(collection: str) -> str | None:
    """The model version an image collection belongs to (None for other collections)."""
    prefix = PREFIXES["image"]
    return collection[len(prefix) :] if collection.startswith(prefix) else None
