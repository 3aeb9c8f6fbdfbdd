"""How a model version's collections are laid out and searched: the knobs of search at scale.

Two-stage search (the default) stores, beside each item's multivector, one dense summary vector
(the renormalised mean of its vectors) in an HNSW index; a query's summary proposes
`candidates` items from that index and MaxSim over their multivectors (which carry no HNSW
graph, m=0) orders them, inside Qdrant's Query API (`prefetch`, then `query`). `exact` scans
every multivector instead: linear in the collection, kept as the reference.

Quantization (int8 scalar or binary) keeps a compressed copy of every region vector in RAM for
the MaxSim stage and rescores the best `limit * oversampling` with the originals, which can then
live on disk. Shards and replicas apply to a Qdrant server or cluster; the embedded engine is a
single shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

SearchMode = Literal["exact", "two_stage"]
Quantization = Literal["none", "int8", "binary"]


@dataclass(frozen=True)
class IndexLayout:
    search: SearchMode = "two_stage"
    quantization: Quantization = "none"
    originals_on_disk: bool = False
    """Region / word vectors memory-mapped from disk rather than held in RAM."""
    payload_on_disk: bool = False
    rescore: bool = True
    """Quantized scores are re-computed with the original vectors for the best hits."""
    oversampling: float = 2.0
    hnsw_m: int = 16
    hnsw_ef_construct: int = 128
    hnsw_ef: int = 256
    """Beam width of the summary index's search; at least the candidate count is used."""
    indexing_threshold: int = 1000
    """Points a collection of the embedded engine gathers before it builds their index."""
    shard_number: int = 1
    replication_factor: int = 1
    write_consistency_factor: int = 1

    def __post_init__(self) -> None:
        for name in ("hnsw_m", "hnsw_ef_construct", "hnsw_ef", "indexing_threshold"):
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


def summary(vectors: np.ndarray) -> np.ndarray:
    """The single vector that stands for a set in the first stage: its renormalised mean.

    On unit vectors the mean's dot product with another mean is the average pairwise
    similarity of the two sets, a cheap proxy for MaxSim that ranks its best matches first
    (measured in `benchmarks/results/scale.json`)."""
    mean = np.asarray(vectors, dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else mean
