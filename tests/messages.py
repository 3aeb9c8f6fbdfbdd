"""Request messages several test modules build the same way."""

from __future__ import annotations

import numpy as np

from services.convert import to_boxes, to_matrix
from teran_protos.v1 import common_pb2

FEAT_DIM = 320
"""Region features of the tiny test models (teran-minilm-tiny)."""


def region_features(seed: int, feat_dim: int = FEAT_DIM) -> common_pb2.RegionFeatures:
    """2..7 random regions with valid boxes, the same for the same seed."""
    gen = np.random.default_rng(seed)
    n = int(gen.integers(2, 8))
    corner = gen.uniform(0, 0.5, size=(n, 2))
    boxes = np.concatenate([corner, corner + gen.uniform(0.1, 0.5, size=(n, 2))], 1)
    features = gen.standard_normal((n, feat_dim)).astype(np.float32)
    return common_pb2.RegionFeatures(
        features=to_matrix(features), boxes=to_boxes(boxes.astype(np.float32))
    )
