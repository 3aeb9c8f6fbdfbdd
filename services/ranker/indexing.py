"""Sentence sources -> a model version's sentence index: shared by ingestion and upgrades."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.metrics import timed
from services.store import Source, StoredSentence, VersionIndex
from services.text_encoder.encoding import EncodedSentence

BATCH = 64
"""Sentences per text-encoder call (the TextEncoder's default limit)."""


class TextEncoder(Protocol):
    """In-process `TextEncoding` or a gRPC client of the TextEncoder service."""

    def encode(
        self,
        sentences: Sequence[str],
        field: str = "sentences",
        single: bool = False,
        version: str | None = None,
    ) -> list[EncodedSentence]: ...


def as_query(text: str) -> str:
    """Queries end with a full stop, like the captions TERAN learns from: its word set leaves
    out the token before [SEP], which should be the full stop, not the query's last word."""
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def index_sentences(text: TextEncoder, index: VersionIndex, sources: Sequence[Source]) -> None:
    """Encode sentence sources with `index`'s model version and write them into it, tagged
    with each source's revision; durable once it returns."""
    encoded: list[EncodedSentence] = []
    texts = [as_query(s.text or "") for s in sources]
    for start in range(0, len(texts), BATCH):
        encoded += text.encode(texts[start : start + BATCH], "sentences", version=index.version)
    points = [
        StoredSentence(
            id=s.id,
            text=s.text or "",
            words=e.words,
            tokens=e.word_tokens,
            payload=s.payload,
            rev=s.rev,
        )
        for s, e in zip(sources, encoded, strict=True)
    ]
    with timed("store", "upsert_sentences"):
        index.sentences.upsert(points)
