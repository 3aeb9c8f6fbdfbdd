"""Search with TERAN's alignment: the store's two-stage MaxSim, computed once, and explanations.

Text -> images: the query's word vectors go to the store's MaxSim, which for words as the query
and regions stored is MrSw itself, so the store's order and scores are the model's (exact where
the layout rescores with the original vectors, as it does by default). Only the page returned
is read back, and only for explanations are its vectors read.

Image -> sentences: with an image as the query the store's MaxSim computes MwSr (best word per
region), so the store only proposes candidates (with their word vectors, in the same call); the
exact MrSw score (best region per sentence word) is computed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.errors import InvalidArgument
from services.image_encoder.encoding import EncodedImage
from services.metrics import timed
from services.ranker.indexing import TextEncoder, as_query, index_sentences
from services.store import (
    PayloadFilter,
    Source,
    StoredImage,
    StoredSentence,
    VectorStore,
    VersionIndex,
    new_rev,
)

TIE_MARGIN = 8
"""Extra hits read past the page, so that equal scores at its edge are ordered here (by id)
and not by whichever the store happened to return."""


@dataclass
class Alignment:
    word: str
    region: int
    box: tuple[float, float, float, float]
    similarity: float


@dataclass
class ImageResult:
    image: StoredImage
    score: float
    alignment: list[Alignment] = field(default_factory=list)


@dataclass
class ImageSearch:
    """Images for a sentence, best first, the query words that were aligned, and the model
    version that answered."""

    results: list[ImageResult]
    words: list[str]
    version: str


@dataclass
class SentenceResult:
    sentence: StoredSentence
    score: float


def mrsw(regions: np.ndarray, sentences: Sequence[np.ndarray]) -> np.ndarray:
    """Exact MrSw of one image [R, D] against each sentence [W_i, D]: sum over a sentence's
    words of its best region."""
    if not sentences:
        return np.zeros(0, dtype=np.float32)
    words = np.concatenate(sentences)
    best = (words @ regions.T).max(axis=1)
    starts = np.cumsum([0, *(len(s) for s in sentences[:-1])])
    return np.add.reduceat(best, starts).astype(np.float32)


def explain(image: StoredImage, words: np.ndarray, tokens: Sequence[str]) -> list[Alignment]:
    """Each query word's best region: the terms of the MrSw sum."""
    cells = image.regions @ words.T  # R x W
    best = cells.argmax(axis=0)
    return [
        Alignment(
            word=token,
            region=int(r),
            box=tuple(float(v) for v in image.boxes[r]),  # type: ignore[arg-type]
            similarity=float(cells[r, w]),
        )
        for w, (token, r) in enumerate(zip(tokens, best, strict=True))
    ]


class Ranker:
    def __init__(
        self,
        store: VectorStore,
        text: TextEncoder,
        candidates: int = 100,
        max_top_k: int = 100,
        max_offset: int = 1000,
    ) -> None:
        self.store = store
        self.text = text
        self.candidates = candidates
        self.max_top_k = max_top_k
        self.max_offset = max_offset

    def _window(self, top_k: int, offset: int) -> int:
        top_k = top_k or 10
        if not 1 <= top_k <= self.max_top_k:
            raise InvalidArgument("top_k", f"must be in 1..{self.max_top_k}, got {top_k}")
        if not 0 <= offset <= self.max_offset:
            raise InvalidArgument("offset", f"must be in 0..{self.max_offset}, got {offset}")
        return top_k

    def search(
        self,
        query: str,
        top_k: int = 10,
        offset: int = 0,
        flt: PayloadFilter | None = None,
        with_explanation: bool = False,
        version: str | None = None,
    ) -> ImageSearch:
        """Images for a sentence; `version` (default the live one) encodes the query and
        answers it, so query and stored vectors always come from one model."""
        top_k = self._window(top_k, offset)
        if not query.strip():
            raise InvalidArgument("query", "empty query")
        index = self.store.index(version) if version else self.store.live()
        encoded = self.text.encode([as_query(query)], "query", single=True, version=index.version)
        words, tokens = encoded[0].words, encoded[0].word_tokens
        if len(words) == 0:
            raise InvalidArgument("query", "no words to align")
        with timed("store", "search_images"):
            hits = index.images.search(
                words, offset + top_k + TIE_MARGIN, flt, candidates=self.candidates
            )
        hits.sort(key=lambda h: (-h.score, h.id))  # ties in a fixed order: pages never overlap
        page = hits[offset : offset + top_k]
        with timed("store", "get_images"):
            found = index.images.get([h.id for h in page], vectors=with_explanation)
        results = [
            ImageResult(
                image=image,
                score=hit.score,
                alignment=explain(image, words, tokens) if with_explanation else [],
            )
            for hit, image in zip(page, found, strict=True)
            if image is not None  # deleted between the two calls
        ]
        return ImageSearch(results, list(tokens), index.version)

    def search_sentences(
        self,
        image: EncodedImage,
        index: VersionIndex,
        top_k: int = 10,
        offset: int = 0,
        flt: PayloadFilter | None = None,
    ) -> list[SentenceResult]:
        """Sentences for an image encoded with `index`'s model version."""
        top_k = self._window(top_k, offset)
        limit = max(self.candidates, offset + top_k)
        with timed("store", "search_sentences"):
            hits = index.sentences.search(
                image.regions, limit, flt, candidates=self.candidates, with_items=True
            )
        sentences = [h.item for h in hits if h.item is not None]
        scores = mrsw(image.regions, [s.words for s in sentences])
        order = sorted(range(len(sentences)), key=lambda i: (-scores[i], sentences[i].id))
        return [SentenceResult(sentences[i], float(scores[i])) for i in order[offset:][:top_k]]

    def ingest_sentences(self, items: Sequence[tuple[str, str, dict[str, Any]]]) -> int:
        """Store sentences (source first, then the live version's points); durable on return."""
        if not items:
            raise InvalidArgument("sentences", "at least one sentence is required")
        for i, (sentence_id, text, _) in enumerate(items):
            if not sentence_id or len(sentence_id) > 256:
                raise InvalidArgument(f"sentences[{i}].id", "ids must be 1..256 characters")
            if not text.strip():
                raise InvalidArgument(f"sentences[{i}].text", "empty sentence")
        index = self.store.live()
        sources = [
            Source(sid, "sentence", new_rev(), text=text, payload=payload)
            for sid, text, payload in items
        ]
        with timed("store", "put_sources"):
            self.store.put_sources(sources)
        index_sentences(self.text, index, sources)
        live = self.store.switched_from(index.version)
        if live is not None:
            index_sentences(self.text, live, sources)
        return len(sources)
