"""Pointing accuracy: does the region a word aligns to lie on the object the word names?

TERAN's explanations are its word -> region alignments; retrieval metrics do not say whether they
point at the right thing. Given object boxes for some words of a caption, a word *points* correctly
when the centre of its aligned region (the argmax over regions of the region-word cosine, the
region MrSw picks for that word) lies inside the named object's box: the pointing game's criterion
(Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016), a region's centre
standing for its point. No published TERAN result reports it; any source with boxes can.

`chance` is the same measure for a region drawn uniformly among the image's regions, so grids
and detector regions of any size can be compared with what pointing at random would score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from teran.data.base import RegionCaptions
from teran.data.synthetic import SyntheticScenes, named_objects, object_box
from teran.evaluation import encode_images, encode_sentences
from teran.model import Teran
from teran.tokenizer import SentenceTokenizer

Box = tuple[float, float, float, float]
"""x1, y1, x2, y2 as fractions of the image width and height."""


@dataclass(frozen=True)
class WordTarget:
    """One word of a caption that names an object: its position among the caption's aligned
    words (0 = the first token after [CLS]), the object's box, and a kind to report by."""

    position: int
    box: Box
    kind: str = "word"


TargetFn = Callable[[int, str, Sequence[str]], Sequence[WordTarget]]
"""(image index, caption, aligned word pieces) -> the words of that caption that name an object."""


def centres_inside(region_boxes: ArrayLike, target_boxes: ArrayLike) -> NDArray[np.bool_]:
    """[N] whether the centre of region box n lies inside target box n (edges included)."""
    regions = np.asarray(region_boxes, dtype=np.float64).reshape(-1, 4)
    targets = np.asarray(target_boxes, dtype=np.float64).reshape(-1, 4)
    if regions.shape != targets.shape:
        raise ValueError(f"{len(regions)} region boxes but {len(targets)} target boxes")
    cx = (regions[:, 0] + regions[:, 2]) / 2
    cy = (regions[:, 1] + regions[:, 3]) / 2
    return (
        (cx >= targets[:, 0])
        & (cx <= targets[:, 2])
        & (cy >= targets[:, 1])
        & (cy <= targets[:, 3])
    )


def pointing_hits(
    similarities: ArrayLike, region_boxes: ArrayLike, targets: Sequence[WordTarget]
) -> NDArray[np.bool_]:
    """For one image-caption pair: [len(targets)] whether each target word's best region (argmax
    over regions of `similarities` [regions, words]) points inside its object's box."""
    sims = np.asarray(similarities, dtype=np.float64)
    boxes = np.asarray(region_boxes, dtype=np.float64)
    if sims.ndim != 2 or boxes.shape != (sims.shape[0], 4):
        raise ValueError(
            f"need similarities [regions, words] and boxes [regions, 4], got {sims.shape} and "
            f"{boxes.shape}"
        )
    if not targets:
        return np.zeros(0, dtype=bool)
    positions = np.array([t.position for t in targets])
    if positions.min() < 0 or positions.max() >= sims.shape[1]:
        raise ValueError(f"target positions must lie in [0, {sims.shape[1]}), got {positions}")
    best = sims[:, positions].argmax(axis=0)
    return centres_inside(boxes[best], [t.box for t in targets])


def chance_hits(region_boxes: ArrayLike, targets: Sequence[WordTarget]) -> NDArray[np.float64]:
    """[len(targets)] the fraction of the image's regions whose centre lies in each target box."""
    boxes = np.asarray(region_boxes, dtype=np.float64).reshape(-1, 4)
    return np.array(
        [centres_inside(boxes, np.tile(t.box, (len(boxes), 1))).mean() for t in targets],
        dtype=np.float64,
    )


@dataclass
class PointingResult:
    """Counts over every target word of every evaluated caption."""

    words: int = 0
    hits: int = 0
    chance: float = 0.0
    """Summed chance of every word; divided by `words` in `to_dict`."""
    by_kind: dict[str, list[int]] = field(default_factory=dict)
    """kind -> [words, hits]."""

    @property
    def accuracy(self) -> float:
        return self.hits / self.words if self.words else float("nan")

    def add(self, targets: Sequence[WordTarget], hits: NDArray[np.bool_], chance: float) -> None:
        self.words += len(targets)
        self.hits += int(hits.sum())
        self.chance += chance
        for t, hit in zip(targets, hits, strict=True):
            counts = self.by_kind.setdefault(t.kind, [0, 0])
            counts[0] += 1
            counts[1] += int(hit)

    def to_dict(self) -> dict[str, object]:
        return {
            "accuracy": self.accuracy,
            "words": self.words,
            "chance": self.chance / self.words if self.words else float("nan"),
            "by_kind": {k: {"words": n, "accuracy": h / n} for k, (n, h) in self.by_kind.items()},
        }


@torch.no_grad()
def evaluate_pointing(
    model: Teran,
    tokenizer: SentenceTokenizer,
    source: RegionCaptions,
    targets: TargetFn,
    captions_per_image: int = 5,
) -> PointingResult:
    """Pointing accuracy of `model`'s word -> region alignments over a source whose `targets`
    function knows the boxes of the objects some caption words name. Each caption is aligned
    with its own image, encoded as the served system encodes them (separately)."""
    was_training = model.training
    model.eval()
    try:
        images = encode_images(model, source)
        captions = [c for i in range(len(source)) for c in source.captions(i)[:captions_per_image]]
        texts = encode_sentences(model, tokenizer, captions)
        pieces = tokenizer(captions, truncate=True).tokens
    finally:
        model.train(was_training)
    result = PointingResult()
    for k, caption in enumerate(captions):
        image = k // captions_per_image
        words = texts.item(k)
        aligned = pieces[k][1 : 1 + len(words)]
        wanted = targets(image, caption, aligned)
        if not wanted:
            continue
        boxes = source.regions(image).boxes
        sims = (images.item(image) @ words.t()).numpy()
        result.add(
            wanted, pointing_hits(sims, boxes, wanted), float(chance_hits(boxes, wanted).sum())
        )
    return result


def synthetic_targets(scenes: SyntheticScenes) -> TargetFn:
    """Targets for synthetic scenes: every colour word and every shape word after a colour word
    points at that object (`teran.data.synthetic.named_objects`)."""

    def targets(image: int, caption: str, words: Sequence[str]) -> list[WordTarget]:
        scene = scenes.scene(image)
        return [WordTarget(k, object_box(o), kind) for k, kind, o in named_objects(scene, words)]

    return targets
