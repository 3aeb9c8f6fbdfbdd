"""Search with TERAN's alignment: the store's two-stage MaxSim, computed once, and explanations.

Text -> images: the query's word vectors go to the store's MaxSim, which for words as the query
and regions stored is MrSw itself, so the store's order and scores are the model's (exact where
the layout rescores with the original vectors, as it does by default). Only the page returned
is read back, and only for explanations are its vectors read.

Image -> sentences: with an image as the query the store's MaxSim computes MwSr (best word per
region), so the store only proposes candidates (with their word vectors, in the same call); the
exact MrSw score (best region per sentence word) is computed here.

Image -> images: the query image's regions go to the store's MaxSim over the stored regions,
which is the region-to-region analogue of MrSw in the shared space (for every query region its
best stored region, summed): the same path as text -> images, query regions for query words.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.convert import check_id
from services.core.images import EncodedImage
from services.core.sentence_index import (
    TextEncoder,
    as_query,
    encode_each,
    index_sentences,
    write_sentences,
)
from services.core.text import EncodedSentence
from services.errors import InvalidArgument, ResourceExhausted, ServiceError
from services.metrics import timed
from services.store import (
    PayloadFilter,
    Source,
    StoredImage,
    StoredSentence,
    VectorStore,
    VersionIndex,
    new_rev,
)

log = logging.getLogger(__name__)

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
        max_query_chars: int = 1000,
    ) -> None:
        self.store = store
        self.text = text
        self.candidates = candidates
        self.max_top_k = max_top_k
        self.max_offset = max_offset
        self.max_query_chars = max_query_chars
        """Checked before the text goes to the tokenizer, whose cost grows with it."""

    def _text(self, text: str, field: str) -> str:
        if len(text) > self.max_query_chars:
            raise InvalidArgument(field, f"{len(text)} characters, at most {self.max_query_chars}")
        if not text.strip():
            raise InvalidArgument(field, "empty text")
        return text

    def _window(self, top_k: int, offset: int) -> int:
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
        check: Callable[[], None] = lambda: None,
    ) -> ImageSearch:
        """Images for a sentence; `version` (default the live one) encodes the query and
        answers it, so query and stored vectors always come from one model. `check` raises
        when the caller is gone; it runs between the expensive steps."""
        top_k = self._window(top_k, offset)
        self._text(query, "query")
        index = self.store.index(version) if version else self.store.live()
        encoded = self.text.encode([as_query(query)], "query", single=True, version=index.version)
        words, tokens = encoded[0].words, encoded[0].word_tokens
        if len(words) == 0:
            raise InvalidArgument("query", "no words to align")
        check()
        page = self._image_page(index, words, top_k, offset, flt, with_explanation, check)
        results = [
            ImageResult(
                image=image,
                score=score,
                alignment=explain(image, words, tokens) if with_explanation else [],
            )
            for image, score in page
        ]
        return ImageSearch(results, list(tokens), index.version)

    def search_similar_images(
        self,
        image: EncodedImage,
        index: VersionIndex,
        top_k: int = 10,
        offset: int = 0,
        flt: PayloadFilter | None = None,
        exclude: str | None = None,
        check: Callable[[], None] = lambda: None,
    ) -> ImageSearch:
        """Images for an image encoded with `index`'s model version: for every query region
        its best stored region, summed (the store's MaxSim with the regions as the query);
        `exclude` (the query's own id, when it is a stored image) is never a hit."""
        top_k = self._window(top_k, offset)
        check()
        page = self._image_page(
            index, image.regions, top_k, offset, flt, False, check, exclude, "search_similar_images"
        )
        results = [ImageResult(image=stored, score=score) for stored, score in page]
        return ImageSearch(results, [], index.version)

    def _image_page(
        self,
        index: VersionIndex,
        query: np.ndarray,
        top_k: int,
        offset: int,
        flt: PayloadFilter | None,
        vectors: bool,
        check: Callable[[], None],
        exclude: str | None = None,
        operation: str = "search_images",
    ) -> list[tuple[StoredImage, float]]:
        """The page of stored images by the store's MaxSim of `query` [Q, D], best first and
        equal scores by id, read back (with their vectors when `vectors`); `exclude` is left
        out (one more hit is asked for, so the page stays full)."""
        extra = 1 if exclude is not None else 0
        with timed("store", operation):
            hits = index.images.search(
                query, offset + top_k + TIE_MARGIN + extra, flt, candidates=self.candidates
            )
        hits = [h for h in hits if h.id != exclude]
        hits.sort(key=lambda h: (-h.score, h.id))  # ties in a fixed order: pages never overlap
        page = hits[offset : offset + top_k]
        check()
        with timed("store", "get_images"):
            found = index.images.get([h.id for h in page], vectors=vectors)
        return [
            (image, hit.score)
            for hit, image in zip(page, found, strict=True)
            if image is not None  # deleted between the two calls
        ]

    def search_sentences(
        self,
        image: EncodedImage,
        index: VersionIndex,
        top_k: int = 10,
        offset: int = 0,
        flt: PayloadFilter | None = None,
        check: Callable[[], None] = lambda: None,
    ) -> list[SentenceResult]:
        """Sentences for an image encoded with `index`'s model version."""
        top_k = self._window(top_k, offset)
        limit = max(self.candidates, offset + top_k)
        check()
        with timed("store", "search_sentences"):
            hits = index.sentences.search(
                image.regions, limit, flt, candidates=self.candidates, with_items=True
            )
        sentences = [h.item for h in hits if h.item is not None]
        scores = mrsw(image.regions, [s.words for s in sentences])
        order = sorted(range(len(sentences)), key=lambda i: (-scores[i], sentences[i].id))
        return [SentenceResult(sentences[i], float(scores[i])) for i in order[offset:][:top_k]]

    def ingest_sentences(self, items: Sequence[SentenceItem]) -> list[ServiceError | None]:
        """Store sentences, each alone: every one is checked and encoded (tokenised) before
        anything is written, so a refused one leaves nothing behind. Sources go first, then
        the live version's points; durable on return. An id given twice: the later wins."""
        if not items:
            raise InvalidArgument("sentences", "at least one sentence is required")
        errors: list[ServiceError | None] = [None] * len(items)
        for k, item in enumerate(items):
            try:
                check_id(item.id, f"{item.field}.id")
                self._text(item.text, f"{item.field}.text")
            except ServiceError as err:
                errors[k] = err
        index = self.store.live()
        valid = [k for k in range(len(items)) if errors[k] is None]
        encoded = encode_each(self.text, [items[k].text for k in valid], index.version)
        kept: dict[str, tuple[Source, EncodedSentence]] = {}  # by id: the later one wins
        for k, e in zip(valid, encoded, strict=True):
            item = items[k]
            if isinstance(e, ServiceError):
                errors[k] = renamed(e, f"{item.field}.text")
                continue
            kept.pop(item.id, None)
            source = Source(item.id, "sentence", new_rev(), text=item.text, payload=item.payload)
            kept[item.id] = (source, e)
        if kept:
            sources = [s for s, _ in kept.values()]
            with timed("store", "put_sources"):
                self.store.put_sources(sources)
            write_sentences(index, sources, [e for _, e in kept.values()])
            live = self.store.switched_from(index.version)
            if live is not None:
                for source, why in index_sentences(self.text, live, sources):
                    log.warning("sentence %r: not encoded by %s: %s", source.id, live.version, why)
        return errors


@dataclass
class SentenceItem:
    """A sentence to store, with the request field it came from (for messages)."""

    id: str
    text: str
    payload: dict[str, Any]
    field: str


def renamed(err: ServiceError, field: str) -> ServiceError:
    """`err` naming `field` instead (an input error raised for a part of the request)."""
    if isinstance(err, InvalidArgument | ResourceExhausted):
        return type(err)(field, err.message.split(": ", 1)[-1])
    return err
