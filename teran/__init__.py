"""TERAN: fine-grained region-word alignment for cross-modal retrieval (Messina et al., 2021)."""

from teran.alignment import AlignmentMode, alignment_scores
from teran.config import TeranCfg, TextCfg, TrainRecipe, VisionCfg
from teran.embeddings import ImageEmbedding, TextEmbedding
from teran.factory import add_model_config, create_model, get_model_config, list_models
from teran.model import Teran
from teran.tokenizer import SentenceTokenizer, TokenBatch

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
