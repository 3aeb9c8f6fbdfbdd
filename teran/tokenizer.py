"""Sentences to the token ids the textual backbone reads, with the tokens an explanation shows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from transformers import AutoTokenizer, PreTrainedTokenizerBase


class SentenceError(ValueError):
    """A sentence the tokenizer refuses, with its index in the batch."""

    def __init__(self, index: int, problem: str) -> None:
        super().__init__(f"sentences[{index}] {problem}")
        self.index = index
        self.problem = problem


@dataclass
class TokenBatch:
    ids: Tensor
    """[B, T] int64: [CLS] + word pieces + [SEP], padded with the pad id."""
    lengths: Tensor
    """[B] int64: tokens per sentence, [CLS] and [SEP] included."""
    tokens: list[list[str]]
    """The word pieces of each sentence, [CLS] and [SEP] included."""


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
        ids_t = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            ids_t[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        tokens = [list(self._tok.convert_ids_to_tokens(r)) for r in rows]
        return TokenBatch(ids=ids_t, lengths=lengths, tokens=tokens)

    def save(self, folder: Path) -> None:
        self._tok.save_pretrained(folder)
