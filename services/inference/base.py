"""What services need from a model server, and nothing more.

Arrays in, arrays out (numpy, batch-first), with the exported models' contract (teran.export):
the in-process backend and the Triton backend are interchangeable behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from services.errors import DependencyUnavailable


class InferenceUnavailable(DependencyUnavailable, RuntimeError):
    """The model server cannot be reached or failed: services answer UNAVAILABLE."""

    component = "inference"


@dataclass(frozen=True)
class ModelInfo:
    """The served model's identity and shapes, from a checkpoint or a repository manifest."""

    version: str
    """Ties stored vectors to the model that made them (collections are named for it)."""
    embed_dim: int
    feat_dim: int
    """Width of precomputed region features the image model accepts."""
    image_size: int | None
    """Side of the square pixel input of the built-in extractor; None without one."""
    max_tokens: int


class InferenceBackend(Protocol):
    info: ModelInfo

    def encode_text(self, token_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """int64 [B, T], [B] -> float32 [B, T, D] (L2-normalised, 0 past each length)."""
        ...

    def encode_regions(
        self, features: np.ndarray, boxes: np.ndarray, n_regions: np.ndarray
    ) -> np.ndarray:
        """float32 [B, R, F], [B, R, 4], int64 [B] -> float32 [B, R + 1, D]; slot 0 is CLS."""
        ...

    def encode_pixels(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 [B, 3, S, S] in [0, 1] -> ([B, G*G + 1, D], boxes [B, G*G, 4])."""
        ...

    def healthy(self) -> bool: ...

    def close(self) -> None: ...
