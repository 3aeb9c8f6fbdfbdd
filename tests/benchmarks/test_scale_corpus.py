"""The scale corpus: real encoder output, cached, and an expansion that keeps its statistics."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from benchmarks.scale_corpus import (
    QUERY_EVERY,
    ScaleCorpus,
    compare,
    expand_images,
    expand_sentences,
    load_or_build,
    random_images,
)
from teran.checkpoint import model_version

CHECKPOINT = Path(__file__).resolve().parents[2] / "models" / "teran-synthetic-tiny"
IMAGES = 40


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scale")


@pytest.fixture(scope="module")
def corpus(cache: Path) -> ScaleCorpus:
    # the build itself asserts that its vectors equal the served encoders' on a few items
    return load_or_build(cache, IMAGES, CHECKPOINT, log=lambda _: None)


def _all(chunks: object) -> np.ndarray:
    return np.concatenate(list(chunks))  # type: ignore[call-overload]


def test_shapes_norms_and_texts(corpus: ScaleCorpus) -> None:
    n, r, d = corpus.regions.shape
    assert (n, r, d) == (IMAGES, 49, 256) and corpus.regions.dtype == np.float16
    norms = np.linalg.norm(corpus.regions.astype(np.float32), axis=-1)
    assert np.abs(norms - 1).max() < 2e-3
    assert corpus.boxes.shape == (r, 4) and corpus.boxes.dtype == np.float32
    assert corpus.boxes.min() >= 0 and corpus.boxes.max() <= 1
    assert np.all(corpus.boxes[:, 2:] > corpus.boxes[:, :2])
    assert len(corpus.sentence_text) == len(corpus.sentence_words) == IMAGES
    assert len(corpus.query_text) == len(corpus.query_words) == IMAGES // QUERY_EVERY
    assert corpus.query_image is not None
    for q, i in zip(corpus.query_text, corpus.query_image, strict=True):
        assert q != corpus.sentence_text[i]  # held out: not the image's stored sentence
    for words in [*corpus.query_words, *corpus.sentence_words]:
        assert words.dtype == np.float32 and words.ndim == 2 and words.shape[1] == d
        assert np.allclose(np.linalg.norm(words, axis=-1), 1, atol=1e-5)
    assert corpus.checkpoint_version == model_version(CHECKPOINT)


def test_cached_build_is_read_not_rebuilt(cache: Path, corpus: ScaleCorpus) -> None:
    lines: list[str] = []
    again = load_or_build(cache, IMAGES, CHECKPOINT, log=lines.append)
    assert lines == []
    assert np.array_equal(again.regions, corpus.regions)
    assert again.query_text == corpus.query_text


def test_expand_images(corpus: ScaleCorpus) -> None:
    n = len(corpus.regions)
    total = 3 * n + 7
    a = _all(expand_images(corpus, total, seed=3, chunk=17))
    b = _all(expand_images(corpus, total, seed=3, chunk=4096))
    assert a.shape == (total, 49, 256) and a.dtype == np.float32
    assert np.array_equal(a, b)  # deterministic, whatever the chunk size
    assert not np.array_equal(a[n:], _all(expand_images(corpus, total, seed=4))[n:])
    assert np.allclose(np.linalg.norm(a, axis=-1), 1, atol=1e-5)
    real = corpus.regions.astype(np.float32)
    assert np.allclose(a[:n], real, atol=2e-3)  # the real ones, renormalised
    assert np.array_equal(_all(expand_images(corpus, 5)), a[:5])
    assert not any(np.allclose(a[j], real, atol=1e-3) for j in range(n, total))
    assert max(len(c) for c in expand_images(corpus, total, chunk=10)) == 10


def test_expand_sentences(corpus: ScaleCorpus) -> None:
    m = len(corpus.sentence_words)
    total = 2 * m + 3
    a = [s for c in expand_sentences(corpus, total, seed=1, chunk=9) for s in c]
    b = [s for c in expand_sentences(corpus, total, seed=1) for s in c]
    assert len(a) == total and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    for x, real in zip(a[:m], corpus.sentence_words, strict=True):
        assert np.allclose(x, real, atol=1e-6)
    lengths = {len(w) for w in corpus.sentence_words}
    for x in a[m:]:
        assert x.dtype == np.float32 and len(x) in lengths
        assert np.allclose(np.linalg.norm(x, axis=-1), 1, atol=1e-5)


def test_random_images() -> None:
    a = _all(random_images(50, 7, 16, seed=2, chunk=8))
    assert a.shape == (50, 7, 16)
    assert np.array_equal(a, _all(random_images(50, 7, 16, seed=2)))
    assert np.allclose(np.linalg.norm(a, axis=-1), 1, atol=1e-5)
    assert abs(float(a.mean())) < 0.02


def test_expanded_statistics_match_real(corpus: ScaleCorpus) -> None:
    # 40 images are a small sample (the module docstring has the figures at 20,000): the
    # tolerances catch a broken expansion (random directions have a mean-vector cosine near 0
    # and a mean max-region similarity near 0.14), not a slightly different one
    queried = dataclasses.replace(corpus, query_words=corpus.sentence_words)
    stats = compare(queried, queries=len(corpus.sentence_words))
    for side in stats.values():
        real, expanded = side["real"], side["expanded"]
        assert expanded["mean_max_region_sim"] == pytest.approx(
            real["mean_max_region_sim"], abs=0.03
        )
        assert abs(expanded["mrsw_median"] - real["mrsw_median"]) < 0.5 * real["mrsw_std"]
        assert expanded["mrsw_std"] == pytest.approx(real["mrsw_std"], rel=0.15)
        assert expanded["mrsw_p99"] == pytest.approx(real["mrsw_p99"], rel=0.15)
        assert expanded["mrsw_top10_mean"] == pytest.approx(real["mrsw_top10_mean"], rel=0.3)
        assert expanded["mean_vector_pairwise_cos"] == pytest.approx(
            real["mean_vector_pairwise_cos"], abs=0.06
        )
    images, sentences = stats["images"], stats["sentences"]
    assert images["expanded"]["within_image_region_cos"] == pytest.approx(
        images["real"]["within_image_region_cos"], abs=0.03
    )
    assert images["expanded"]["position_mean_cos_vs_real"] > 0.97
    assert sentences["expanded"]["within_sentence_word_cos"] == pytest.approx(
        sentences["real"]["within_sentence_word_cos"], abs=0.03
    )
