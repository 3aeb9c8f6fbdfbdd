"""What the shared store code and each Qdrant backend exchange: points to write, a search's
plan, and the rows and records that come back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .filters import Clauses

PointData = tuple[str, dict[str, np.ndarray], dict[str, Any]]
"""(point id, named vectors: the multivector [n, D] and the pooled one [k, D], full payload)."""

Row = tuple[dict[str, Any], float, np.ndarray | None]
"""(payload, score, multivector when asked for) of one query result."""


@dataclass(frozen=True)
class QueryPlan:
    """One search as a backend runs it: MaxSim on `vector`, after `candidates` are prefetched
    by MaxSim on the pooled vectors when `two_stage`."""

    vector: str
    query: np.ndarray
    limit: int
    clauses: Clauses
    two_stage: bool
    candidates: int
    with_vectors: bool


def records_by_id(
    records: Sequence[Any], vector_name: str
) -> dict[str, tuple[np.ndarray | None, dict[str, Any]]]:
    """Retrieved points (qdrant-client's or qdrant-edge's records) by point id."""
    out: dict[str, tuple[np.ndarray | None, dict[str, Any]]] = {}
    for rec in records:
        out[str(rec.id)] = (vector_of(rec.vector, vector_name), dict(rec.payload or {}))
    return out


def vector_of(vectors: Any, name: str) -> np.ndarray | None:
    vec = vectors.get(name) if isinstance(vectors, dict) else None
    return np.asarray(vec, dtype=np.float32) if vec is not None else None
