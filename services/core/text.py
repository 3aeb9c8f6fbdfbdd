"""Sentences to per-token embeddings: tokenise here (numpy, no torch), run the text model on the
backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.errors import InvalidArgument
from services.inference.models import ServedModels
from teran.tokenizer import TEXT_TOKENS_LEFT_OUT, SentenceError, SentenceTokenizer


@dataclass
class EncodedSentence:
    tokens: list[str]
    embeddings: np.ndarray
    """[T, D] one row per token, [CLS] and [SEP] included."""

    @property
    def first_word(self) -> int:
        return 1

    @property
    def word_count(self) -> int:
        return max(0, len(self.tokens) - TEXT_TOKENS_LEFT_OUT)

    @property
    def words(self) -> np.ndarray:
        """[W, D] the vectors that take part in the alignment."""
        return self.embeddings[self.first_word : self.first_word + self.word_count]

    @property
    def word_tokens(self) -> list[str]:
        return self.tokens[self.first_word : self.first_word + self.word_count]


class TextEncoding:
    """The text side of the platform, used by the TextEncoder service and the ranker."""

    def __init__(
        self,
        models: ServedModels,
        tokenizers: dict[str, SentenceTokenizer],
        max_sentences: int = 64,
        max_chars: int = 1024,
    ) -> None:
        self.models = models
        self.tokenizers = tokenizers
        self.max_sentences = max_sentences
        self.max_chars = max_chars
        """Characters per sentence, checked before tokenising: its cost grows with the text."""

    def encode(
        self,
        sentences: Sequence[str],
        field: str = "sentences",
        single: bool = False,
        version: str | None = None,
    ) -> list[EncodedSentence]:
        """Sentences -> token embeddings with model `version` (None: the primary)."""
        backend = self.models.backend(version)
        tokenizer = self.tokenizers[backend.info.version]
        if not sentences:
            raise InvalidArgument(field, "at least one sentence is required")
        if len(sentences) > self.max_sentences:
            raise InvalidArgument(
                field, f"{len(sentences)} sentences, at most {self.max_sentences} per request"
            )
        for i, sentence in enumerate(sentences):
            if len(sentence) > self.max_chars:
                raise InvalidArgument(
                    _name(field, i, single), f"{len(sentence)} characters, at most {self.max_chars}"
                )
        try:
            batch = tokenizer.encode(list(sentences))
        except SentenceError as err:
            raise InvalidArgument(_name(field, err.index, single), err.problem) from err
        vectors = backend.encode_text(batch.ids, batch.lengths)
        return [
            EncodedSentence(tokens=batch.tokens[i], embeddings=vectors[i, : int(n)])
            for i, n in enumerate(batch.lengths)
        ]

    def encode_one(
        self, sentence: str, field: str = "query", version: str | None = None
    ) -> EncodedSentence:
        return self.encode([sentence], field, single=True, version=version)[0]


def _name(field: str, index: int, single: bool) -> str:
    return field if single else f"{field}[{index}]"
