"""Sentences to the token ids the textual backbone reads, with the tokens an explanation shows.

Torch-free: the tokenizer gives numpy arrays (`SentenceTokenizer.encode`), which a Triton-backed
service sends as they are; training and in-process inference take the same arrays as tensors
(`SentenceTokenizer.__call__`, through `torch.from_numpy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from teran.backbone import resolve_backbone
from teran.config import TeranCfg
from teran.contract import read_header

if TYPE_CHECKING:
    from torch import Tensor

TOKENIZER_DIR = "tokenizer"
"""A checkpoint's tokenizer folder (absent when the backbone is a bundled one)."""
TEXT_TOKENS_LEFT_OUT = 3
"""Tokens of a sentence that take no part in the alignment: [CLS], the token before [SEP], and
[SEP] (see `teran.embeddings`)."""


class SentenceError(ValueError):
    """A sentence the tokenizer refuses, with its index in the batch."""

    def __init__(self, index: int, problem: str) -> None:
        super().__init__(f"sentences[{index}] {problem}")
        self.index = index
        self.problem = problem


@dataclass
class TokenArrays:
    """A tokenised batch as numpy arrays (what the services send to Triton)."""

    ids: np.ndarray
    """[B, T] int64: [CLS] + word pieces + [SEP], padded with the pad id."""
    lengths: np.ndarray
    """[B] int64: tokens per sentence, [CLS] and [SEP] included."""
    tokens: list[list[str]]
    """The word pieces of each sentence, [CLS] and [SEP] included."""

    def to_torch(self) -> TokenBatch:
        """The same batch as tensors (sharing the arrays' memory)."""
        import torch

        return TokenBatch(torch.from_numpy(self.ids), torch.from_numpy(self.lengths), self.tokens)


@dataclass
class TokenBatch:
    """A tokenised batch as tensors: `TokenArrays`' fields, for the model."""

    ids: Tensor
    lengths: Tensor
    tokens: list[list[str]]


class SentenceTokenizer:
    """The backbone's own tokenizer, loaded from its folder (lower-casing WordPiece for BERT)."""

    def __init__(self, folder: str | Path, max_tokens: int) -> None:
        self.folder = Path(folder)
        self.max_tokens = max_tokens
        self._tok: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(
            self.folder, local_files_only=True
        )

    @property
    def pad_id(self) -> int:
        return int(self._tok.pad_token_id or 0)

    def __call__(self, sentences: Sequence[str], truncate: bool = False) -> TokenBatch:
        """Tokenise a batch as tensors; see `encode`."""
        return self.encode(sentences, truncate).to_torch()

    def encode(self, sentences: Sequence[str], truncate: bool = False) -> TokenArrays:
        """Tokenise a batch; a sentence longer than `max_tokens` is an error unless `truncate`."""
        if isinstance(sentences, str):
            raise TypeError("pass a sequence of sentences, not one string")
        encoded = self._tok(list(sentences), add_special_tokens=True)["input_ids"]
        rows: list[list[int]] = []
        for index, (sentence, ids) in enumerate(zip(sentences, encoded, strict=True)):
            if not sentence.strip():
                raise SentenceError(index, "is empty")
            if len(ids) > self.max_tokens:
                if not truncate:
                    raise SentenceError(
                        index, f"has {len(ids)} tokens, more than max_tokens={self.max_tokens}"
                    )
                ids = [*ids[: self.max_tokens - 1], ids[-1]]
            rows.append(ids)
        width = max((len(r) for r in rows), default=0)
        ids_a = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        for i, row in enumerate(rows):
            ids_a[i, : len(row)] = row
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        tokens = [list(self._tok.convert_ids_to_tokens(r)) for r in rows]
        return TokenArrays(ids=ids_a, lengths=lengths, tokens=tokens)

    def save(self, folder: Path) -> None:
        self._tok.save_pretrained(folder)


def load_tokenizer(folder: str | Path) -> SentenceTokenizer:
    """Only the tokenizer of a checkpoint (services that send the model's math elsewhere), read
    without torch."""
    header = read_header(folder)
    cfg = TeranCfg.from_dict(header["model"])
    bundled = header.get("bundled_backbone")
    source = resolve_backbone(bundled) if bundled else Path(folder) / TOKENIZER_DIR
    return SentenceTokenizer(source, cfg.text.max_tokens)
