"""Pointing accuracy: hand-made boxes and alignments, the synthetic word -> object mapping, and
the shipped demo model's explanations on held-out synthetic scenes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from teran.checkpoint import load_checkpoint
from teran.data.synthetic import Background, Scene, SceneObject, named_objects, object_box
from teran.pointing import (
    PointingResult,
    WordTarget,
    centres_inside,
    chance_hits,
    evaluate_pointing,
    pointing_hits,
    synthetic_targets,
)
from teran.regions import grid_boxes
from trainer.data import synthetic_split

DEMO_MODEL = Path(__file__).resolve().parents[2] / "models" / "teran-synthetic-tiny"

# a 2 x 2 grid: top left, top right, bottom left, bottom right
GRID = grid_boxes(2).numpy()
OBJECT_TOP_RIGHT: tuple[float, float, float, float] = (0.55, 0.05, 0.95, 0.45)


def test_centres_inside_counts_edges_and_rejects_mismatched_lengths() -> None:
    regions = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.2, 0.2, 0.3, 0.3]])
    targets = np.array([[0.25, 0.25, 0.9, 0.9], [0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.25, 0.25]])
    assert centres_inside(regions, targets).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="2 region boxes but 3 target boxes"):
        centres_inside(regions[:2], targets)


def test_word_aligned_to_the_named_object_points_correctly() -> None:
    # words: "red", "circle"; both align best to the top-right cell, where the object is
    sims = np.array([[0.1, 0.0], [0.9, 0.8], [0.2, 0.1], [0.0, 0.3]])
    targets = [WordTarget(0, OBJECT_TOP_RIGHT, "colour"), WordTarget(1, OBJECT_TOP_RIGHT, "shape")]
    assert pointing_hits(sims, GRID, targets).tolist() == [True, True]


def test_word_aligned_elsewhere_fails() -> None:
    # "circle" prefers the bottom-right cell: its centre is outside the object's box
    sims = np.array([[0.1, 0.0], [0.9, 0.3], [0.2, 0.1], [0.0, 0.8]])
    targets = [WordTarget(0, OBJECT_TOP_RIGHT, "colour"), WordTarget(1, OBJECT_TOP_RIGHT, "shape")]
    hits = pointing_hits(sims, GRID, targets)
    assert hits.tolist() == [True, False]
    result = PointingResult()
    result.add(targets, hits, float(chance_hits(GRID, targets).sum()))
    report: dict[str, Any] = result.to_dict()
    assert report["accuracy"] == 0.5
    assert report["chance"] == 0.25  # one cell of four has its centre on the object
    assert report["by_kind"] == {
        "colour": {"words": 1, "accuracy": 1.0},
        "shape": {"words": 1, "accuracy": 0.0},
    }


def test_pointing_rejects_bad_shapes_and_positions() -> None:
    with pytest.raises(ValueError, match="similarities"):
        pointing_hits(np.zeros((3, 2)), GRID, [WordTarget(0, OBJECT_TOP_RIGHT)])
    with pytest.raises(ValueError, match="positions"):
        pointing_hits(np.zeros((4, 2)), GRID, [WordTarget(2, OBJECT_TOP_RIGHT)])


def test_synthetic_words_name_their_objects() -> None:
    red_circle = SceneObject("circle", "red", "small", 0.2, 0.5)
    blue_square = SceneObject("square", "blue", "large", 0.7, 0.5)
    scene = Scene((red_circle, blue_square), Background("grey", "plain", 8))
    words = ["a", "small", "red", "disc", "left", "of", "the", "blue", "square"]
    assert named_objects(scene, words) == [
        (2, "colour", red_circle),
        (3, "shape", red_circle),
        (7, "colour", blue_square),
        (8, "shape", blue_square),
    ]
    # a shape word after a colour it does not go with names nothing
    assert named_objects(scene, ["red", "square"]) == [(0, "colour", red_circle)]
    x1, y1, x2, y2 = object_box(blue_square)
    assert x1 < 0.7 < x2 and y1 < 0.5 < y2 and x2 - x1 == pytest.approx(2 * 0.88 * 0.17)


@pytest.fixture(scope="module")
def held_out_scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any]:
    model, tokenizer = load_checkpoint(DEMO_MODEL)
    source = synthetic_split(
        "test", 40, 11, model.cfg, tmp_path_factory.mktemp("cache"), progress=False
    )
    return model, tokenizer, source


def test_demo_model_points_at_named_objects_far_above_chance(
    held_out_scenes: tuple[Any, Any, Any],
) -> None:
    """The shipped model's figure is 63 % on the benchmark's 1,000 test scenes (the issue's
    target, 80 %, is not reached: see docs/benchmarks.md); here, other scenes, a floor well
    below it."""
    model, tokenizer, source = held_out_scenes
    result = evaluate_pointing(model, tokenizer, source, synthetic_targets(source.source))
    report: dict[str, Any] = result.to_dict()
    assert result.words > 300
    assert set(report["by_kind"]) == {"colour", "shape"}
    assert report["chance"] < 0.15
    assert result.accuracy >= 0.5 and result.accuracy >= 5 * report["chance"], report
    assert report["by_kind"]["colour"]["accuracy"] >= 0.65, report
