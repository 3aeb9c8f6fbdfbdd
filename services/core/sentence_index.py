"""Sentence sources -> a model version's sentence index: shared by ingestion and upgrades."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.core.text import EncodedSentence
from services.errors import InvalidArgument, ResourceExhausted, ServiceError
from services.metrics import timed
from services.store import Source, StoredSentence, VersionIndex

BATCH = 64
"""Sentences per text-encoder call (the TextEncoder's default limit)."""
INPUT_ERRORS = (InvalidArgument, ResourceExhausted)
"""What a text encoder raises for a sentence it refuses (as opposed to being unreachable)."""


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


def encode_each(
    text: TextEncoder, texts: Sequence[str], version: str
) -> list[EncodedSentence | ServiceError]:
    """Each text's encoding with model `version`, or the input error that text alone causes:
    a batch the encoder refuses is encoded again one text at a time, so one bad sentence fails
    alone (a remote encoder's message does not say which one). Other errors propagate."""
    out: list[EncodedSentence | ServiceError] = []
    for start in range(0, len(texts), BATCH):
        batch = [as_query(t) for t in texts[start : start + BATCH]]
        try:
            out += text.encode(batch, "sentences", version=version)
        except INPUT_ERRORS:
            for one in batch:
                try:
                    out += text.encode([one], "text", single=True, version=version)
                except INPUT_ERRORS as err:
                    out.append(err)
    return out


def write_sentences(
    index: VersionIndex, sources: Sequence[Source], encoded: Sequence[EncodedSentence]
) -> None:
    """Write encoded sentences into `index`, tagged with each source's revision; durable once
    it returns."""
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


def index_sentences(
    text: TextEncoder, index: VersionIndex, sources: Sequence[Source]
) -> list[tuple[Source, ServiceError]]:
    """Encode sentence sources with `index`'s model version and write those it can encode;
    returns the others with why."""
    results = encode_each(text, [s.text or "" for s in sources], index.version)
    ok = [(s, e) for s, e in zip(sources, results, strict=True) if not isinstance(e, ServiceError)]
    if ok:
        write_sentences(index, [s for s, _ in ok], [e for _, e in ok])
    return [(s, e) for s, e in zip(sources, results, strict=True) if isinstance(e, ServiceError)]
