"""How a model version's collections are laid out and searched: the knobs of search at scale.

Two-stage search (the default) stores, beside each item's multivector, a pooled one: its vectors
clustered (k-means) into `pooled_vectors` centroids, indexed with HNSW. The query's MaxSim over
that index proposes `candidates` items and MaxSim over their full multivectors (which carry no
HNSW graph, m=0) orders them, in one request to Qdrant's Query API (`prefetch`, then `query`).
Pooling keeps what a word's best region is like: where a mean vector or a 4096-d MUVERA encoding
reached recall@10 0.2-0.45 at C = 100 of 20k images, 8 centroids of 49 regions reach 0.93 and 16
reach 0.99 (0.64 and 0.83 at 100k; `benchmarks/results/scale-pooled.json`, brute force, which the
HNSW index nearly matches), hence 16 by default; `first_stage="mean"` keeps the single mean
vector for comparison. `exact` scans every multivector instead: linear in the collection, the
reference.

Quantization (int8 scalar or binary) keeps a compressed copy of the region and pooled vectors in
RAM for scoring and rescores the best `limit * oversampling` with the originals, which can then
live on disk. Shards and replicas apply to a Qdrant server or cluster; the embedded engine is a
single shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

SearchMode = Literal["exact", "two_stage"]
FirstStage = Literal["pooled", "mean"]
Quantization = Literal["none", "int8", "binary"]


@dataclass(frozen=True)
class IndexLayout:
    search: SearchMode = "two_stage"
    first_stage: FirstStage = "pooled"
    pooled_vectors: int = 16
    quantization: Quantization = "none"
    originals_on_disk: bool = False
    """Region / word vectors memory-mapped from disk rather than held in RAM."""
    payload_on_disk: bool = False
    rescore: bool = True
    """Quantized scores are re-computed with the original vectors for the best hits."""
    oversampling: float = 2.0
    hnsw_m: int = 32
    hnsw_ef_construct: int = 256
    hnsw_ef: int = 128
    """Beam width of the pooled index's search; at least the candidate count is used."""
    indexing_threshold: int = 1000
    """Points a collection of the embedded engine gathers before it builds their index."""
    shard_number: int = 1
    replication_factor: int = 1
    write_consistency_factor: int = 1

    def __post_init__(self) -> None:
        for name in (
            "pooled_vectors",
            "hnsw_m",
            "hnsw_ef_construct",
            "hnsw_ef",
            "indexing_threshold",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.oversampling < 1:
            raise ValueError(f"oversampling must be >= 1, got {self.oversampling}")
        if min(self.shard_number, self.replication_factor, self.write_consistency_factor) < 1:
            raise ValueError("shard_number, replication_factor, write_consistency_factor >= 1")
        if self.write_consistency_factor > self.replication_factor:
            raise ValueError(
                f"write_consistency_factor ({self.write_consistency_factor}) cannot exceed "
                f"replication_factor ({self.replication_factor})"
            )

    def summarize(self, vectors: np.ndarray) -> np.ndarray:
        """The multivector the first stage indexes for a set of unit vectors [n, D]."""
        if self.first_stage == "mean":
            return _unit(vectors.mean(axis=0, keepdims=True))
        return pool(vectors, self.pooled_vectors)


def pool(vectors: np.ndarray, k: int, iterations: int = 8) -> np.ndarray:
    """k-means of a set of unit vectors into at most k unit centroids, deterministically
    (evenly spaced rows start it), so every process pools an item the same way."""
    x = np.asarray(vectors, dtype=np.float32)
    if len(x) <= k:
        return x.copy()
    centroids = x[np.linspace(0, len(x) - 1, k).round().astype(int)].copy()
    for _ in range(iterations):
        assign = (x @ centroids.T).argmax(axis=1)
        members = np.zeros((len(x), k), dtype=np.float32)
        members[np.arange(len(x)), assign] = 1.0
        counts = members.sum(axis=0)
        sums = members.T @ x
        keep = counts > 0  # an emptied centroid stays where it was
        centroids[keep] = sums[keep] / counts[keep, None]
        centroids = _unit(centroids)
    return centroids


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)
