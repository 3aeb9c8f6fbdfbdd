"""Search with TERAN's exact alignment: store candidates, exact MrSw re-score, explanations.

Text -> images: the query's word vectors go to the store's MaxSim, which for words as the query
and regions stored is MrSw itself; the candidates are then re-scored with the core's exact
scorer (`teran.alignment`) on the stored vectors, so results never depend on how the store
searched (exact, HNSW, quantised) and explanations come from the same numbers.

Image -> sentences: with an image as the query the store's MaxSim computes MwSr (best word per
region), so it only proposes candidates; the exact MrSw score (best region per sentence word)
is computed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from services.errors import InvalidArgument
from services.image_encoder.encoding import EncodedImage
from services.metrics import timed
from services.ranker.indexing import TextEncoder, as_query, index_sentences
from services.store.base import (
    PayloadFilter,
    Source,
    StoredImage,
    StoredSentence,
    VectorStore,
    new_rev,
)
from teran.alignment import AlignmentMode, alignment_scores


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
class SentenceResult:
    sentence: StoredSentence
    score: float


def mrsw(regions: Sequence[np.ndarray], words: Sequence[np.ndarray]) -> np.ndarray:
    """Exact MrSw scores [len(regions), len(words)] with the core's chunked scorer."""
    if not regions or not words:
        return np.zeros((len(regions), len(words)), dtype=np.float32)
    r_pad, r_mask = _pad(regions)
    w_pad, w_mask = _pad(words)
    with torch.no_grad():
        scores = alignment_scores(r_pad, r_mask, w_pad, w_mask, AlignmentMode.MrSw)
    return scores.numpy()


def _pad(sets: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(s) for s in sets))
    dim = sets[0].shape[1]
    out = torch.zeros(len(sets), width, dim)
    mask = torch.zeros(len(sets), width, dtype=torch.bool)
    for i, s in enumerate(sets):
        out[i, : len(s)] = torch.from_numpy(np.asarray(s, dtype=np.float32))
        mask[i, : len(s)] = True
    return out, mask


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
    ) -> tuple[list[ImageResult], list[str], str]:
        """Images for a sentence, best first, the query words that were aligned, and the model
        version that answered (`version`, default the live one: query and stored vectors
        always come from that one model)."""
        top_k = self._window(top_k, offset)
        if not query.strip():
            raise InvalidArgument("query", "empty query")
        version = version or self.store.live_version()
        encoded = self.text.encode([as_query(query)], "query", single=True, version=version)[0]
        words, tokens = encoded.words, encoded.word_tokens
        if len(words) == 0:
            raise InvalidArgument("query", "no words to align")
        limit = max(self.candidates, offset + top_k)
        with timed("store", "search_images"):
            hits = self.store.search_images(words, limit, flt, version)
        with timed("store", "get_images"):
            found = self.store.get_images([h.id for h in hits], version)
            images = [im for im in found if im is not None]
        scores = mrsw([im.regions for im in images], [words])[:, 0]
        order = np.argsort(-scores, kind="stable")[offset : offset + top_k]
        results = [
            ImageResult(
                image=images[i],
                score=float(scores[i]),
                alignment=explain(images[i], words, tokens) if with_explanation else [],
            )
            for i in order
        ]
        return results, list(tokens), version

    def search_sentences(
        self,
        image: EncodedImage,
        version: str,
        top_k: int = 10,
        offset: int = 0,
        flt: PayloadFilter | None = None,
    ) -> list[SentenceResult]:
        """Sentences for an image encoded with model `version`."""
        top_k = self._window(top_k, offset)
        limit = max(self.candidates, offset + top_k)
        with timed("store", "search_sentences"):
            hits = self.store.search_sentences(image.regions, limit, flt, version)
        with timed("store", "get_sentences"):
            found = self.store.get_sentences([h.id for h in hits], version)
            sentences = [s for s in found if s is not None]
        scores = mrsw([image.regions], [s.words for s in sentences])[0]
        order = np.argsort(-scores, kind="stable")[offset : offset + top_k]
        return [SentenceResult(sentences[i], float(scores[i])) for i in order]

    def ingest_sentences(self, items: Sequence[tuple[str, str, dict[str, Any]]]) -> int:
        """Store sentences (source first, then the live version's points); durable on return."""
        if not items:
            raise InvalidArgument("sentences", "at least one sentence is required")
        for i, (sentence_id, text, _) in enumerate(items):
            if not sentence_id or len(sentence_id) > 256:
                raise InvalidArgument(f"sentences[{i}].id", "ids must be 1..256 characters")
            if not text.strip():
                raise InvalidArgument(f"sentences[{i}].text", "empty sentence")
        version = self.store.live_version()
        sources = [
            Source(sid, "sentence", new_rev(), text=text, payload=payload)
            for sid, text, payload in items
        ]
        with timed("store", "put_sources"):
            self.store.put_sources(sources)
        index_sentences(self.text, self.store, sources, version)
        live = self.store.switched_from(version)
        if live is not None:
            index_sentences(self.text, self.store, sources, live)
        return len(sources)
