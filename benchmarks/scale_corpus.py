"""A scale corpus of real encoder output, and its expansion to a million images.

Benchmarks of search at scale need document vectors with the structure the served model gives
(clusters, a dominant background direction, per-grid-cell statistics, similar regions within an
image), not random directions. This module encodes synthetic scenes (`teran.data.synthetic`,
split "test", seed 1000: the demo model was trained on split "train", seed 0, and validated and
evaluated on test seeds 0-3; the other benchmarks use test seeds 7 and 11) with the demo model
through the services' own encoding classes (`ImageEncoding` and `TextEncoding` over an
`InProcessBackend`), so every vector equals what the server stores or queries with; the build
asserts it on the first items of every chunk by re-encoding them the server's way (PNG bytes
through `ImageEncoding.decode`, one query through `TextEncoding.encode_one`).

What is in it (`load_or_build`):

- `regions`: the 49 grid-cell region vectors of each image (CLS slot excluded), float16.
- `sentence_text` / `sentence_words`: one caption per corpus image (`captions(i)[0]`), stored as
  sentences, with the words that take part in the alignment (`EncodedSentence.words`).
- `query_text` / `query_words`: every 20th corpus image's *second* caption (`captions(i)[1]`),
  a held-out description of an image that is in the corpus (not one of the stored sentences):
  known-item search. 20,000 images give 1,000 queries.

Built once into `.cache/teran/scale/<model version>-test1000/` in chunks of 500 images (one file
each, written atomically): a crashed or stopped build resumes at the first missing chunk, and a
larger build reuses a smaller one's chunks. Region extraction runs at ~19 images/s on an idle
2-core CPU, so 20,000 images take ~17 minutes (28.7 measured beside other jobs):
`nohup .venv/bin/python -m benchmarks.scale_corpus --images 20000 > /tmp/scale_corpus.log 2>&1 &`.

Expansion beyond the N real images (`expand_images`, `expand_sentences`), streamed in chunks and
deterministic in (seed, index) whatever the chunk size; the first N items are the real ones.

- Image j >= N: a real base image b(j) (uniform) in which each grid cell, with probability
  `P_CELL` = 0.25, is replaced by the same cell of one donor image d(j), drawn among the base's
  `DONORS` = 8 nearest images by mean region vector (in these scenes mostly its confusable
  group: same shapes and colours, other bindings or layout); then isotropic Gaussian noise of
  norm ~`NOISE` = 0.05 per region, renormalised. Donated cells keep their grid position, so the
  per-position distribution is unchanged. Donors drawn from *any* image mix backgrounds and
  objects of unrelated scenes: at p = 0.25 that quadrupled the median MrSw of a query (0.44
  against 0.11) and raised the mean-vector cosine to 0.84 (real 0.79). Even among neighbours a
  crossover makes new colour/shape combinations, so queries find slightly better matches in
  expanded images (below: median MrSw +0.11, i.e. +0.2 standard deviations, p99 +9 %, top-10
  +3 %); noise alone (p = 0) matches the scores better but makes every expanded image a
  near-copy of one real image.
- Sentence j >= N: a real caption (uniform) with noise of norm ~`WORD_NOISE` = 0.15 per word,
  renormalised; its length is the caption's. Swapping words at the same position with a
  neighbouring caption (`p` > 0, supported) breaks the scores: at p = 0.25 the mean top-10 MrSw
  of an image query rose from 1.60 to 2.46 (words of two captions match more of an image), so
  `P_WORD` = 0. Expanded sentences are therefore near-copies (cosine ~0.99 per word) of real
  ones: about 4 per caption at 100,000; keep that in mind when reading sentence results there.

Measured by `python -m benchmarks.scale_corpus --stats`: the 20,000 real items against 20,000
synthetic ones (items N..2N), with 200 of the text queries and 200 corpus images as image
queries (MrSw = sum over the query's words, or the sentence's words, of the best region):

| images | real | expanded |
|---|---|---|
| mean over (query word, image) of the best region's similarity | 0.0055 | 0.0151 |
| its 90th percentile | 0.2634 | 0.2876 |
| exact MrSw of a query over the images: median | 0.1223 | 0.2364 |
| standard deviation | 0.5718 | 0.5663 |
| 99th percentile | 1.2489 | 1.3665 |
| mean of each query's top-10 scores | 1.5866 | 1.6293 |
| mean pairwise cosine of images' mean region vectors | 0.7885 | 0.7884 |
| mean nearest-neighbour cosine of those (within the 20,000) | 0.9864 | 0.9896 |
| mean cosine between two regions of one image | 0.4597 | 0.4595 |
| cosine of each grid position's mean vector to the real one (mean) | 1.0000 | 1.0000 |

| sentences | real | expanded |
|---|---|---|
| mean over (sentence word, image query) of the best region's similarity | 0.0059 | 0.0059 |
| its 90th percentile | 0.2655 | 0.2629 |
| exact MrSw of an image query over the sentences: median | 0.1269 | 0.1272 |
| standard deviation | 0.5669 | 0.5633 |
| 99th percentile | 1.2522 | 1.2423 |
| mean of each image query's top-10 scores | 1.6017 | 1.5926 |
| mean pairwise cosine of sentences' mean word vectors | 0.8566 | 0.8516 |
| mean nearest-neighbour cosine of those (within the 20,000) | 0.9884 | 0.9914 |
| mean cosine between two words of one sentence | 0.3874 | 0.3788 |
| words per sentence | 12.6500 | 12.6625 |

`random_images` is the old baseline: unit Gaussian directions.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from teran_dev.demo_data import png_bytes

SPLIT = "test"
SEED = 1000
"""Scenes no model or benchmark of this project uses (see the module docstring)."""
CHUNK = 500
"""Images per cache file."""
QUERY_EVERY = 20
"""Every QUERY_EVERY-th corpus image gives one held-out query caption."""
ENCODE_BATCH = 32
TEXT_BATCH = 64
CHECKED = 2
"""Items of every chunk re-encoded the server's way and compared."""

P_CELL = 0.25
"""Probability that a synthetic image's grid cell comes from the donor image."""
P_WORD = 0.0
"""Probability that a synthetic sentence's word comes from the donor caption (0: none, see the
module docstring)."""
NOISE = 0.05
"""Norm of the Gaussian noise added to each synthetic region vector before renormalising."""
WORD_NOISE = 0.15
"""The same for each synthetic word vector."""
DONORS = 8
"""Donors are drawn among the base's DONORS nearest items (by mean vector); 0: any item."""
BLOCK = 1024
"""Synthetic items drawn per random stream: output does not depend on the chunk size."""


@dataclass
class ScaleCorpus:
    regions: np.ndarray
    """[N, R, D] float16 region vectors, rows L2-normalised before the cast."""
    boxes: np.ndarray
    """[R, 4] float32 grid-cell boxes (x1, y1, x2, y2 fractions), the same for every image."""
    query_text: list[str]
    """Held-out captions of corpus images (not among the stored sentences), used as queries."""
    query_words: list[np.ndarray]
    """[W_i, D] float32: the words the server aligns for each query."""
    sentence_text: list[str]
    """One caption per corpus image, in image order: the stored sentences."""
    sentence_words: list[np.ndarray]
    """[W_i, D] float32."""
    checkpoint_version: str
    """`teran.checkpoint.model_version` of the model used."""
    query_image: np.ndarray | None = None
    """[Q] int64: the corpus image each query was written for."""


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class _Encoders:
    """The services' encoding classes over the in-process backend: what the server runs."""

    def __init__(self, checkpoint: Path) -> None:
        from services.config import ImageEncoderCfg
        from services.core.images import ImageEncoding
        from services.core.text import TextEncoding
        from services.inference.inprocess import InProcessBackend
        from services.inference.models import ServedModels
        from teran.checkpoint import load_tokenizer

        backend = InProcessBackend(checkpoint)
        self.version = backend.info.version
        models = ServedModels({self.version: backend}, {self.version: checkpoint}, self.version)
        self.images = ImageEncoding(models, ImageEncoderCfg())
        self.text = TextEncoding(models, {self.version: load_tokenizer(checkpoint)})
        self.models = models

    def encode_images(self, pictures: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        from services.core.images import Picture

        regions, boxes = [], None
        for start in range(0, len(pictures), ENCODE_BATCH):
            batch = [Picture(p) for p in pictures[start : start + ENCODE_BATCH]]
            for e in self.images.encode(batch):
                regions.append(e.regions)
                boxes = e.boxes
        assert boxes is not None
        return np.stack(regions), np.asarray(boxes, dtype=np.float32)

    def encode_text(self, sentences: Sequence[str]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(sentences), TEXT_BATCH):
            encoded = self.text.encode(list(sentences[start : start + TEXT_BATCH]))
            out += [np.array(e.words, dtype=np.float32) for e in encoded]
        return out

    def check(
        self,
        pictures: Sequence[Any],
        regions: np.ndarray,
        texts: Sequence[str],
        words: Sequence[np.ndarray],
    ) -> None:
        """The served path gives the same vectors: PNG bytes decoded by the ImageEncoder, and a
        query sentence encoded on its own as the ranker does."""
        for i, picture in enumerate(pictures):
            served = self.images.encode([self.images.decode(png_bytes(picture), "image")])[0]
            assert np.allclose(served.regions, regions[i], atol=1e-4), "image vectors differ"
        for text, w in zip(texts, words, strict=True):
            served_words = self.text.encode_one(text).words
            assert served_words.shape == w.shape, "query words differ"
            assert np.allclose(served_words, w, atol=1e-4), "query vectors differ"

    def close(self) -> None:
        self.models.close()


def _concat(arrays: Sequence[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    flat = np.concatenate(arrays) if arrays else np.zeros((0, dim), np.float32)
    return flat.astype(np.float32), lengths


def _split(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []


def _build_chunk(enc: _Encoders, scenes: Any, start: int, end: int, path: Path) -> None:
    pictures = [scenes.image(i) for i in range(start, end)]
    regions, boxes = enc.encode_images(pictures)
    sentences = [scenes.captions(i)[0] for i in range(start, end)]
    query_image = [i for i in range(start, end) if i % QUERY_EVERY == 0]
    queries = [scenes.captions(i)[1] for i in query_image]
    sentence_words = enc.encode_text(sentences)
    query_words = enc.encode_text(queries)
    enc.check(pictures[:CHECKED], regions, queries[:CHECKED], query_words[:CHECKED])
    enc.check([], regions, sentences[:CHECKED], sentence_words[:CHECKED])
    dim = regions.shape[-1]
    s_flat, s_len = _concat(sentence_words, dim)
    q_flat, q_len = _concat(query_words, dim)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        regions=_unit(regions).astype(np.float16),
        boxes=boxes,
        sentence_text=np.array(sentences, dtype=str),
        sentence_flat=s_flat,
        sentence_len=s_len,
        query_image=np.array(query_image, dtype=np.int64),
        query_text=np.array(queries, dtype=str),
        query_flat=q_flat,
        query_len=q_len,
    )
    os.replace(tmp, path)


def _chunks(images: int) -> list[tuple[int, int]]:
    return [(s, min(s + CHUNK, images)) for s in range(0, images, CHUNK)]


def _folder(cache: Path, version: str) -> Path:
    return Path(cache) / f"{version}-{SPLIT}{SEED}"


def load_or_build(
    cache: Path = Path(".cache/teran/scale"),
    images: int = 20_000,
    checkpoint: Path = Path("models/teran-synthetic-tiny"),
    log: Callable[[str], None] = print,
) -> ScaleCorpus:
    """The corpus of the first `images` scenes, built (or completed) into `cache` if needed.

    Args:
        cache: root folder; files go to `<cache>/<model version>-test1000/`.
        images: corpus size N.
        checkpoint: the model folder (its weights' hash names the cache).
        log: progress lines (one per built chunk).
    Returns:
        The corpus; chunks already in the cache are read, missing ones encoded first.
    """
    from teran.checkpoint import model_version

    version = model_version(checkpoint)
    folder = _folder(cache, version)
    folder.mkdir(parents=True, exist_ok=True)
    meta = folder / "meta.json"
    if not meta.is_file():
        meta.write_text(
            json.dumps({"version": version, "split": SPLIT, "seed": SEED, "chunk": CHUNK}) + "\n"
        )
    parts = [(s, e, folder / f"chunk-{s:06d}-{e:06d}.npz") for s, e in _chunks(images)]
    missing = [p for p in parts if not p[2].is_file()]
    if missing:
        t0 = time.perf_counter()
        log(f"scale corpus: encoding {len(missing)} of {len(parts)} chunks into {folder}")
        from teran.data.synthetic import SyntheticScenes

        scenes = SyntheticScenes(images, split=SPLIT, seed=SEED)
        enc = _Encoders(Path(checkpoint))
        assert enc.version == version
        try:
            for k, (start, end, path) in enumerate(missing):
                _build_chunk(enc, scenes, start, end, path)
                done = sum(e - s for s, e, _ in missing[: k + 1])
                rate = done / (time.perf_counter() - t0)
                left = sum(e - s for s, e, _ in missing[k + 1 :]) / rate
                log(f"  images {start}-{end}: {rate:.1f} images/s, {left / 60:.1f} min left")
        finally:
            enc.close()
        log(f"scale corpus: built in {(time.perf_counter() - t0) / 60:.1f} min")
    return _load(parts, version)


def _load(parts: Sequence[tuple[int, int, Path]], version: str) -> ScaleCorpus:
    regions, sentence_text, query_text = [], [], []
    sentence_words: list[np.ndarray] = []
    query_words: list[np.ndarray] = []
    query_image: list[np.ndarray] = []
    boxes = None
    for _, _, path in parts:
        with np.load(path) as z:
            regions.append(z["regions"])
            if boxes is None:
                boxes = z["boxes"]
            assert np.array_equal(boxes, z["boxes"]), "grid boxes differ between chunks"
            sentence_text += [str(t) for t in z["sentence_text"]]
            sentence_words += _split(z["sentence_flat"], z["sentence_len"])
            query_text += [str(t) for t in z["query_text"]]
            query_words += _split(z["query_flat"], z["query_len"])
            query_image.append(z["query_image"])
    assert boxes is not None
    return ScaleCorpus(
        regions=np.concatenate(regions),
        boxes=boxes,
        query_text=query_text,
        query_words=query_words,
        sentence_text=sentence_text,
        sentence_words=sentence_words,
        checkpoint_version=version,
        query_image=np.concatenate(query_image),
    )


def _rechunk(blocks: Iterator[np.ndarray], chunk: int) -> Iterator[np.ndarray]:
    pending: list[np.ndarray] = []
    size = 0
    for block in blocks:
        pending.append(block)
        size += len(block)
        while size >= chunk:
            joined = np.concatenate(pending)
            yield joined[:chunk]
            pending, size = [joined[chunk:]], size - chunk
    if size:
        yield np.concatenate(pending)


def _donors(
    rng: np.random.Generator, n_real: int, base: np.ndarray, near: np.ndarray | None
) -> np.ndarray:
    """A donor for each base, other than the base: one of its nearest items when `near` [N, k]
    is given, any item otherwise."""
    if n_real < 2:
        return base.copy()
    if near is not None:
        return near[base, rng.integers(near.shape[1], size=len(base))]
    return (base + 1 + rng.integers(n_real - 1, size=len(base))) % n_real


def nearest(vectors: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """[N, D] unit vectors -> [N, k] indices of each one's k most similar others."""
    k = min(k, len(vectors) - 1)
    out = np.empty((len(vectors), k), dtype=np.int64)
    for s in range(0, len(vectors), block):
        sims = vectors[s : s + block] @ vectors.T
        sims[np.arange(len(sims)), np.arange(s, s + len(sims))] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1, kind="stable")
        out[s : s + block] = np.take_along_axis(top, order, 1)
    return out


def _noise(rng: np.random.Generator, shape: tuple[int, ...], norm: float) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(norm / np.sqrt(shape[-1]))


def _synthetic_images(
    regions: np.ndarray,
    near: np.ndarray | None,
    block: int,
    size: int,
    seed: int,
    p: float,
    noise: float,
) -> np.ndarray:
    rng = np.random.default_rng([seed, 0, block])
    n_real = len(regions)
    base = rng.integers(n_real, size=size)
    donor = _donors(rng, n_real, base, near)
    swap = rng.random((size, regions.shape[1])) < p
    x = regions[base].astype(np.float32)
    x[swap] = regions[donor][swap]
    if noise:
        x += _noise(rng, x.shape, noise)
    return _unit(x)


def expand_images(
    corpus: ScaleCorpus,
    n: int,
    seed: int = 0,
    chunk: int = 4096,
    p: float = P_CELL,
    noise: float = NOISE,
    donors: int = DONORS,
) -> Iterator[np.ndarray]:
    """`n` images as float32 chunks [B, R, D] with unit rows: the first N are the corpus's own
    (renormalised after the float16 round trip), the rest the crossover described in the module
    docstring (donors among each base's `donors` nearest images; 0: any image). The same for
    every `chunk` given the seed; holds at most a chunk plus one block of 1,024 images."""
    real = corpus.regions
    n_real = len(real)

    def blocks() -> Iterator[np.ndarray]:
        for start in range(0, min(n, n_real), BLOCK):
            yield _unit(real[start : min(start + BLOCK, n, n_real)])
        if n <= n_real:
            return
        near = None
        if donors and p > 0:
            means = [
                real[s : s + BLOCK].astype(np.float32).mean(1) for s in range(0, n_real, BLOCK)
            ]
            near = nearest(_unit(np.concatenate(means)), donors)
        for k, start in enumerate(range(n_real, n, BLOCK)):
            yield _synthetic_images(real, near, k, min(BLOCK, n - start), seed, p, noise)

    return _rechunk(blocks(), chunk)


def _synthetic_sentences(
    words: Sequence[np.ndarray],
    near: np.ndarray | None,
    block: int,
    size: int,
    seed: int,
    p: float,
    noise: float,
) -> list[np.ndarray]:
    rng = np.random.default_rng([seed, 1, block])
    n_real = len(words)
    base = rng.integers(n_real, size=size)
    donor = _donors(rng, n_real, base, near)
    out = []
    for b, d in zip(base, donor, strict=True):
        x = np.array(words[b], dtype=np.float32)
        donated = words[d]
        swap = rng.random(len(x)) < p
        swap[len(donated) :] = False
        x[swap] = donated[: len(x)][swap[: len(donated)]]
        if noise:
            x += _noise(rng, x.shape, noise)
        out.append(_unit(x))
    return out


def expand_sentences(
    corpus: ScaleCorpus,
    n: int,
    seed: int = 0,
    chunk: int = 4096,
    p: float = P_WORD,
    noise: float = WORD_NOISE,
    donors: int = DONORS,
) -> Iterator[list[np.ndarray]]:
    """`n` sentences' word sets ([W_i, D] float32, unit rows) in chunks: the first N the corpus's
    sentences, the rest the word crossover described in the module docstring."""
    real = corpus.sentence_words
    n_real = len(real)

    def items() -> Iterator[np.ndarray]:
        for i in range(min(n, n_real)):
            yield _unit(real[i])
        if n <= n_real:
            return
        near = None
        if donors and p > 0:
            near = nearest(_unit(np.stack([w.mean(0) for w in real])), donors)
        for k, start in enumerate(range(n_real, n, BLOCK)):
            yield from _synthetic_sentences(real, near, k, min(BLOCK, n - start), seed, p, noise)

    out: list[np.ndarray] = []
    for item in items():
        out.append(item)
        if len(out) == chunk:
            yield out
            out = []
    if out:
        yield out


def random_images(
    n: int, regions: int, dim: int, seed: int = 0, chunk: int = 4096
) -> Iterator[np.ndarray]:
    """The random-vector baseline: `n` images of `regions` unit Gaussian directions each, float32
    chunks [B, regions, dim], the same for every `chunk` given the seed."""

    def blocks() -> Iterator[np.ndarray]:
        for k, start in enumerate(range(0, n, BLOCK)):
            rng = np.random.default_rng([seed, 2, k])
            size = min(BLOCK, n - start)
            yield _unit(rng.standard_normal((size, regions, dim), dtype=np.float32))

    return _rechunk(blocks(), chunk)


# -- statistics that the expansion has to keep ---------------------------------------------------


def pad_sets(sets: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length vector sets -> zero-padded [S, L, D] float32 and a [S, L] mask."""
    width = max(1, max(len(s) for s in sets))
    out = np.zeros((len(sets), width, sets[0].shape[-1]), dtype=np.float32)
    mask = np.zeros((len(sets), width), dtype=bool)
    for i, s in enumerate(sets):
        out[i, : len(s)], mask[i, : len(s)] = s, True
    return out, mask


def max_sims(images: np.ndarray, words: np.ndarray, budget: int = 1 << 25) -> np.ndarray:
    """[M, R, D] images, [V, D] word vectors -> [M, V]: each word's best region in each image
    (in blocks of about `budget` similarities)."""
    m, r, d = images.shape
    out = np.empty((m, len(words)), dtype=np.float32)
    step_v = max(1, min(len(words), budget // r))
    step_m = max(1, budget // (r * step_v))
    for s in range(0, m, step_m):
        x = images[s : s + step_m].reshape(-1, d)
        for v in range(0, len(words), step_v):
            w = words[v : v + step_v]
            out[s : s + step_m, v : v + step_v] = (x @ w.T).reshape(-1, r, len(w)).max(1)
    return out


def _cos_stats(vectors: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """(mean pairwise cosine, mean nearest-neighbour cosine over a sample) of unit vectors."""
    sample = vectors[rng.choice(len(vectors), size=min(1000, len(vectors)), replace=False)]
    pair = sample @ sample.T
    k = len(sample)
    mean_pair = (pair.sum() - np.trace(pair)) / max(1, k * (k - 1))
    nn = sample[: min(300, k)] @ vectors.T
    nn[nn > 0.99999] = -1.0  # the item itself (and exact copies)
    return float(mean_pair), float(nn.max(1).mean())


def image_stats(images: np.ndarray, queries: Sequence[np.ndarray], seed: int = 0) -> dict:
    """The statistics the image expansion must keep, on [M, R, D] unit images and text queries."""
    rng = np.random.default_rng(seed)
    words = np.concatenate(queries)
    owner = np.repeat(np.arange(len(queries)), [len(q) for q in queries])
    best = max_sims(images, words)  # [M, V]
    scores = np.zeros((len(images), len(queries)), dtype=np.float32)
    np.add.at(scores.T, owner, best.T)
    top10 = -np.sort(-scores, axis=0)[:10]
    means = _unit(images.mean(1))
    pair, nn = _cos_stats(means, rng)
    sample = images[rng.choice(len(images), size=min(2000, len(images)), replace=False)]
    gram = sample @ sample.transpose(0, 2, 1)
    r = images.shape[1]
    within = (gram.sum((1, 2)) - r) / (r * (r - 1))
    return {
        **_score_stats(best, scores, top10),
        "mean_vector_pairwise_cos": pair,
        "mean_vector_nn_cos": nn,
        "within_image_region_cos": float(within.mean()),
        "position_means": _unit(images.mean(0)),
    }


def _score_stats(best: np.ndarray, scores: np.ndarray, top10: np.ndarray) -> dict[str, float]:
    """Best-region similarities and exact MrSw scores, summarised alike for both kinds."""
    return {
        "mean_max_region_sim": float(best.mean()),
        "max_region_sim_p90": float(np.quantile(best, 0.9)),
        "mrsw_std": float(scores.std()),
        "mrsw_median": float(np.median(scores)),
        "mrsw_p99": float(np.quantile(scores, 0.99)),
        "mrsw_top10_mean": float(top10.mean()),
    }


def sentence_stats(
    sentences: Sequence[np.ndarray], image_queries: np.ndarray, seed: int = 0
) -> dict:
    """The statistics the sentence expansion must keep, against [Q, R, D] image queries."""
    rng = np.random.default_rng(seed)
    words, mask = pad_sets(sentences)  # [S, L, D]
    flat = words[mask]
    best = max_sims(image_queries, flat)  # [Q, V]: best region of each stored word
    owner = np.repeat(np.arange(len(sentences)), mask.sum(1))
    scores = np.zeros((len(image_queries), len(sentences)), dtype=np.float32)
    np.add.at(scores.T, owner, best.T)
    top10 = -np.sort(-scores, axis=1)[:, :10]
    means = _unit(words.sum(1))
    pair, nn = _cos_stats(means, rng)
    lengths = mask.sum(1)
    gram = words @ words.transpose(0, 2, 1)
    within = (gram.sum((1, 2)) - lengths) / np.maximum(1, lengths * (lengths - 1))
    return {
        **_score_stats(best, scores, top10),
        "mean_vector_pairwise_cos": pair,
        "mean_vector_nn_cos": nn,
        "within_sentence_word_cos": float(within[lengths > 1].mean()),
        "mean_words": float(lengths.mean()),
    }


def compare(
    corpus: ScaleCorpus,
    queries: int = 200,
    seed: int = 0,
    p_cell: float = P_CELL,
    p_word: float = P_WORD,
    noise: float = NOISE,
    word_noise: float = WORD_NOISE,
    donors: int = DONORS,
) -> dict[str, dict]:
    """Real items against as many synthetic ones (items N..2N of the expansion)."""
    n = len(corpus.regions)
    real = _unit(corpus.regions)
    expanded = expand_images(corpus, 2 * n, seed=seed, p=p_cell, noise=noise, donors=donors)
    synth = np.concatenate(list(expanded))[n:]
    text = corpus.query_words[:queries]
    real_i, synth_i = image_stats(real, text), image_stats(synth, text)
    cos = (real_i.pop("position_means") * synth_i.pop("position_means")).sum(-1)
    real_i["position_mean_cos_vs_real"] = 1.0
    synth_i["position_mean_cos_vs_real"] = float(cos.mean())
    del synth
    picks = np.random.default_rng(seed).choice(n, size=min(queries, n), replace=False)
    image_queries = real[np.sort(picks)]
    m = len(corpus.sentence_words)
    expanded_s = expand_sentences(
        corpus, 2 * m, seed=seed, p=p_word, noise=word_noise, donors=donors
    )
    synth_s = [s for c in expanded_s for s in c][m:]
    real_s = [_unit(s) for s in corpus.sentence_words]
    return {
        "images": {"real": real_i, "expanded": synth_i},
        "sentences": {
            "real": sentence_stats(real_s, image_queries),
            "expanded": sentence_stats(synth_s, image_queries),
        },
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--cache", default=".cache/teran/scale")
    p.add_argument("--checkpoint", default="models/teran-synthetic-tiny")
    p.add_argument("--stats", action="store_true", help="real against expanded statistics")
    args = p.parse_args(argv)
    corpus = load_or_build(Path(args.cache), args.images, Path(args.checkpoint))
    print(
        f"{len(corpus.regions)} images {corpus.regions.shape}, {len(corpus.sentence_text)} "
        f"sentences, {len(corpus.query_text)} queries, model {corpus.checkpoint_version}"
    )
    if args.stats:
        print(json.dumps(compare(corpus), indent=1))


if __name__ == "__main__":
    main()
