"""Retrieval protocol checks against the reference fixture and hand-computed values."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from teran.metrics import (
    DirectionMetrics,
    RetrievalMetrics,
    average_metrics,
    evaluate,
    evaluate_1k,
    evaluate_5k,
    i2t_ranks,
    rank_metrics,
    t2i_ranks,
)
from teran.relevance import (
    Relevance,
    compute_rouge_relevance,
    load_relevance,
    mean_ndcg,
    ndcg_from_ranking,
    ndcg_per_query,
    rouge_l,
    save_relevance,
)

SHARED = Path(
    os.environ.get("TERAN_SHARED") or Path(__file__).resolve().parents[2].parent / "shared"
)
FIXTURE = SHARED / "reference" / "metrics"
METRIC_NAMES = ("r1", "r5", "r10", "medr", "meanr")


def _reference() -> tuple[np.ndarray, dict[str, Any]]:
    sims = np.load(FIXTURE / "sims.npy")
    expected = json.loads((FIXTURE / "expected_metrics.json").read_text())
    return sims, expected


def _brute_ranks(sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-query loop over a stable descending sort: the documented tie order."""
    n_images, n_captions = sims.shape
    i2t = np.array(
        [
            np.flatnonzero(np.isin(np.argsort(-sims[i], kind="stable"), range(5 * i, 5 * i + 5)))[0]
            for i in range(n_images)
        ]
    )
    t2i = np.array(
        [
            int(np.flatnonzero(np.argsort(-sims[:, j], kind="stable") == j // 5)[0])
            for j in range(n_captions)
        ]
    )
    return i2t, t2i


def test_reference_fixture_ranks_and_metrics() -> None:
    sims, expected = _reference()
    assert sims.shape == (20, 100)
    i2t = i2t_ranks(sims)
    t2i = t2i_ranks(sims)
    np.testing.assert_array_equal(i2t, np.asarray(expected["i2t_ranks"]).astype(np.int64))
    np.testing.assert_array_equal(t2i, np.asarray(expected["t2i_ranks"]).astype(np.int64))
    result = evaluate(sims)
    for direction in ("i2t", "t2i"):
        got = getattr(result, direction)
        want = expected[direction]
        for name in METRIC_NAMES:
            assert getattr(got, name) == pytest.approx(want[name], abs=1e-9), (direction, name)
        assert got.ndcg_rougeL is None and got.ndcg_spice is None
    want_rsum = sum(float(expected[d][k]) for d in ("i2t", "t2i") for k in ("r1", "r5", "r10"))
    assert result.rsum == pytest.approx(want_rsum, abs=1e-9)
    assert evaluate_5k(sims) == result
    report = json.loads(json.dumps(result.to_dict()))
    assert report["i2t"]["r1"] == pytest.approx(result.i2t.r1)
    assert report["t2i"]["ndcg_spice"] is None


def test_ranks_match_per_query_sort_with_ties() -> None:
    rng = np.random.default_rng(3)
    sims = np.round(rng.normal(size=(12, 60)), 1)  # many exact ties
    i2t, t2i = _brute_ranks(sims)
    np.testing.assert_array_equal(i2t_ranks(sims), i2t)
    np.testing.assert_array_equal(t2i_ranks(sims), t2i)


def test_all_tied_scores_rank_by_index() -> None:
    sims = np.zeros((4, 20))
    np.testing.assert_array_equal(i2t_ranks(sims), [0, 5, 10, 15])
    np.testing.assert_array_equal(t2i_ranks(sims), np.arange(20) // 5)


def test_rank_metrics_formulas() -> None:
    m = rank_metrics(np.array([0, 0, 3, 7, 12, 30]))
    assert (m.r1, m.r5, m.r10) == pytest.approx((100 * 2 / 6, 100 * 3 / 6, 100 * 4 / 6))
    assert m.medr == 6.0  # floor(median = 5.0) + 1
    assert m.meanr == pytest.approx(52 / 6 + 1)


def _synthetic(n_images: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sims = rng.normal(size=(n_images, 5 * n_images))
    sims[np.arange(5 * n_images) // 5, np.arange(5 * n_images)] += 1.0
    return sims


def test_1k_protocol_is_mean_of_independent_folds() -> None:
    sims = _synthetic(12, seed=1)
    rel = np.random.default_rng(2).random((60, 12)).astype(np.float32)
    folds = [
        evaluate(
            sims[4 * f : 4 * f + 4, 20 * f : 20 * f + 20],
            Relevance({"rougeL": rel[20 * f : 20 * f + 20, 4 * f : 4 * f + 4]}),
        )
        for f in range(3)
    ]
    got = evaluate_1k(sims, Relevance({"rougeL": rel}), fold_size=4, n_folds=3)
    for direction in ("i2t", "t2i"):
        for name in (*METRIC_NAMES, "ndcg_rougeL"):
            want = np.mean([getattr(getattr(r, direction), name) for r in folds])
            assert getattr(getattr(got, direction), name) == pytest.approx(want, abs=1e-12)
        assert getattr(got, direction).ndcg_spice is None
    assert got.rsum == pytest.approx(np.mean([r.rsum for r in folds]), abs=1e-12)
    assert got == average_metrics(folds)
    # Folds differ from the whole matrix (cross-fold captions compete in 5K but not in 1K).
    assert got != evaluate(sims, Relevance({"rougeL": rel}))


@pytest.mark.parametrize(
    ("shape", "fold_size", "n_folds"),
    [
        ((4, 19), 4, 1),
        ((4, 20, 1), 4, 1),
        ((12, 60), 5, 3),
        ((12, 60), 4, 2),
        ((12, 60), 0, 3),
    ],
)
def test_shape_errors(shape: tuple[int, ...], fold_size: int, n_folds: int) -> None:
    with pytest.raises(ValueError, match=r"images|captions|fold|2-D"):
        evaluate_1k(np.zeros(shape), fold_size=fold_size, n_folds=n_folds)


def test_shape_errors_other_entry_points() -> None:
    with pytest.raises(ValueError, match="5 captions per image"):
        evaluate(np.zeros((3, 14)))
    with pytest.raises(ValueError, match="captions per image"):
        i2t_ranks(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        t2i_ranks(np.full((1, 5), np.nan))
    with pytest.raises(ValueError, match="shape"):
        evaluate(np.zeros((2, 10)), Relevance({"rougeL": np.zeros((10, 3))}))
    with pytest.raises(ValueError, match="unknown relevance"):
        Relevance({"bleu": np.zeros((10, 2))})


def test_ndcg_perfect_ranking_is_one() -> None:
    rel = np.array([0.2, 0.9, 0.0, 0.5])
    assert ndcg_from_ranking(rel, [1, 3, 0, 2]) == 1.0
    assert ndcg_from_ranking(rel, [1, 3]) == 1.0
    assert ndcg_from_ranking(np.zeros(4), [0, 1]) == 0.0


def test_ndcg_hand_computed() -> None:
    rel = [0.5, 1.0, 0.0]
    ranking = [2, 0, 1]
    dcg = (2**0.0 - 1) / math.log2(2) + (2**0.5 - 1) / math.log2(3) + (2**1.0 - 1) / math.log2(4)
    ideal = (2**1.0 - 1) / math.log2(2) + (2**0.5 - 1) / math.log2(3) + (2**0.0 - 1) / math.log2(4)
    assert ndcg_from_ranking(rel, ranking) == pytest.approx(dcg / ideal, rel=1e-12)
    # depth 2: ideal uses the two best relevances only
    dcg2 = 0.0 + (2**0.5 - 1) / math.log2(3)
    ideal2 = 1.0 + (2**0.5 - 1) / math.log2(3)
    assert ndcg_from_ranking(rel, ranking[:2]) == pytest.approx(dcg2 / ideal2, rel=1e-12)


def test_ndcg_per_query_matches_scalar_and_mean_skips_zeros() -> None:
    rng = np.random.default_rng(4)
    rel = rng.random((7, 30)).astype(np.float32)
    rel[2] = 0.0
    rankings = np.argsort(rng.random((7, 30)), axis=1)[:, :25]
    per_query = ndcg_per_query(rel, rankings)
    for q in range(7):
        assert per_query[q] == pytest.approx(ndcg_from_ranking(rel[q], rankings[q]), rel=1e-9)
    assert per_query[2] == 0.0
    assert mean_ndcg(per_query) == pytest.approx(np.delete(per_query, 2).mean())
    assert mean_ndcg(np.zeros(3)) == 0.0


def test_evaluate_ndcg_is_one_when_scores_follow_relevance() -> None:
    rng = np.random.default_rng(5)
    rel = rng.random((40, 8)).astype(np.float32)
    sims = rel.T.astype(np.float64)  # i2t ranks by rel[:, i], t2i by rel[q, :]
    result = evaluate(sims, Relevance({"rougeL": rel, "spice": rel}))
    for direction in (result.i2t, result.t2i):
        assert direction.ndcg_rougeL == pytest.approx(1.0, abs=1e-12)
        assert direction.ndcg_spice == pytest.approx(1.0, abs=1e-12)
    reversed_result = evaluate(-sims, Relevance({"rougeL": rel}))
    assert reversed_result.i2t.ndcg_rougeL is not None
    assert reversed_result.i2t.ndcg_rougeL < 0.9


def test_rouge_l_identical_disjoint_and_worked_example() -> None:
    assert rouge_l("A man riding a horse.", ["a man riding a horse"]) == pytest.approx(1.0)
    assert rouge_l("a man riding a horse", ["two dogs play outside"]) == 0.0
    # candidate: a man riding a horse (5 tokens)
    # ref 1: a man riding a brown horse on a beach (9): LCS 5 -> P = 5/5, R = 5/9
    # ref 2: a man on a horse (5): LCS "a man a horse" = 4 -> P = 4/5, R = 4/5
    # P_max = 1 (ref 1), R_max = 4/5 (ref 2); beta = 1.2
    p, r, b2 = 1.0, 4 / 5, 1.2**2
    want = (1 + b2) * p * r / (r + b2 * p)
    got = rouge_l(
        "a man riding a horse", ["a man riding a brown horse on a beach", "a man on a horse"]
    )
    assert got == pytest.approx(want, rel=1e-12)
    assert got == pytest.approx(1.952 / 2.24, rel=1e-12)


def test_rouge_relevance_matrix(tmp_path: Path) -> None:
    captions = [
        "a man riding a horse",
        "a man riding a horse",
        "a man riding a horse",
        "a man on a horse",
        "a man riding a brown horse on a beach",
        "two dogs play outside",
        "two dogs play outside",
        "two dogs play outside",
        "two dogs play outside",
        "two dogs play outside",
    ]
    rel = compute_rouge_relevance(captions)
    assert rel.shape == (10, 2) and rel.dtype == np.float32
    assert rel[0, 0] == pytest.approx(1.0)
    assert rel[0, 1] == 0.0 and rel[5, 0] == 0.0
    assert rel[5, 1] == pytest.approx(1.0)
    # caption 3 against image 0: its own text is among the references, as in the reference
    assert rel[3, 0] == pytest.approx(1.0)
    path = tmp_path / "coco-test-rougeL.npy"
    save_relevance(path, rel)
    assert path.stat().st_size == rel.size * 4
    loaded = load_relevance(path, n_captions=10)
    np.testing.assert_array_equal(loaded, rel)
    with pytest.raises(ValueError, match="rows"):
        load_relevance(path, n_captions=3)
    with pytest.raises(ValueError, match="captions"):
        compute_rouge_relevance(captions[:7])
    loaded_named = Relevance.load({"rougeL": path}, n_captions=10)
    np.testing.assert_array_equal(loaded_named.matrices["rougeL"], rel)


def test_metrics_types_are_frozen_and_serialisable() -> None:
    m = DirectionMetrics(1.0, 2.0, 3.0, 4.0, 5.0, ndcg_rougeL=0.5)
    with pytest.raises(AttributeError):
        m.r1 = 2.0  # type: ignore[misc]
    result = RetrievalMetrics(i2t=m, t2i=m, rsum=12.0)
    assert result.to_dict() == {
        "i2t": {**m.to_dict()},
        "t2i": {**m.to_dict()},
        "rsum": 12.0,
    }
    assert m.to_dict()["ndcg_rougeL"] == 0.5 and m.to_dict()["ndcg_spice"] is None


def test_evaluate_command_reports_both_protocols(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from trainer import evaluate as evaluate_cmd

    rng = np.random.default_rng(7)
    sims = rng.standard_normal((6, 30))
    sims[np.arange(30) // 5, np.arange(30)] += 2.0
    np.save(tmp_path / "sims.npy", sims)
    result = CliRunner().invoke(
        evaluate_cmd.app,
        ["sims", str(tmp_path / "sims.npy"), "--fold-size", "3", "--out", str(tmp_path / "r.json")],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["full"]["rsum"] == pytest.approx(evaluate(sims).rsum)
    assert data["1k"]["rsum"] == pytest.approx(evaluate_1k(sims, fold_size=3, n_folds=2).rsum)


def test_relevance_matrix_equals_rouge_score_cell_by_cell() -> None:
    """The bit-parallel LCS gives rouge-score's values, including captions over 64 tokens."""
    from teran.relevance import compute_rouge_relevance, make_rouge_scorer, rouge_l

    rng = np.random.default_rng(3)
    words = ["a", "red", "blue", "circle", "square", "left", "of", "above", "the", "dog"]
    captions = [" ".join(rng.choice(words, size=int(rng.integers(1, 14)))) + "." for _ in range(40)]
    captions[5] = " ".join(rng.choice(words, size=150)) + "."
    captions[12] = " ".join(rng.choice(words, size=70))
    rel = compute_rouge_relevance(captions)
    scorer = make_rouge_scorer()
    for q, caption in enumerate(captions):
        for j in range(8):
            expected = rouge_l(caption, captions[5 * j : 5 * j + 5], scorer)
            assert rel[q, j] == pytest.approx(expected, abs=1e-6), (q, j)
