"""TERAN: fine-grained region-word alignment for cross-modal retrieval (Messina et al., 2021).

The names below load on first use, so that the torch-free modules (`teran.contract`, which the
Triton client and backend import) load without torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from teran.alignment import AlignmentMode, alignment_scores
    from teran.config import TeranCfg, TextCfg, TrainRecipe, VisionCfg
    from teran.embeddings import ImageEmbedding, TextEmbedding
    from teran.factory import add_model_config, create_model, get_model_config, list_models
    from teran.model import Teran
    from teran.tokenizer import SentenceTokenizer, TokenBatch

_EXPORTS = {
    "AlignmentMode": "teran.alignment",
    "alignment_scores": "teran.alignment",
    "TeranCfg": "teran.config",
    "TextCfg": "teran.config",
    "TrainRecipe": "teran.config",
    "VisionCfg": "teran.config",
    "ImageEmbedding": "teran.embeddings",
    "TextEmbedding": "teran.embeddings",
    "add_model_config": "teran.factory",
    "create_model": "teran.factory",
    "get_model_config": "teran.factory",
    "list_models": "teran.factory",
    "Teran": "teran.model",
    "SentenceTokenizer": "teran.tokenizer",
    "TokenBatch": "teran.tokenizer",
}

__all__ = [
    "AlignmentMode",
    "ImageEmbedding",
    "SentenceTokenizer",
    "Teran",
    "TeranCfg",
    "TextCfg",
    "TextEmbedding",
    "TokenBatch",
    "TrainRecipe",
    "VisionCfg",
    "add_model_config",
    "alignment_scores",
    "create_model",
    "get_model_config",
    "list_models",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'teran' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
