"""Synthetic compositional scenes: coloured shapes whose captions hinge on bindings and relations.

SYNTHETIC data, made for a quality benchmark rather than for realism. TERAN's claim is that aligning
image regions with words beats one global embedding per modality when images differ in *which*
attribute goes with *which* object and *where* objects sit, rather than in what they contain. Every
test image belongs to a group of 4 that share the same multiset of shapes and of colours (colours
swapped between objects, the layout mirrored or flipped), and at least 3 of its 5 captions name
colour-shape bindings and spatial relations that are true for it and false for the other three: a
bag-of-words matcher finds several equally good images, a region-word aligner can tell them apart.
The train split mixes such groups (so bindings can be learnt) with independent random scenes.

Pictures suit the grid region extractor (`teran.regions`: 7 x 7 cells of 32 px at 224 px): even
small objects span about 47 px so each fills at least one cell, objects never overlap, colours are
saturated and far apart, backgrounds are dark so that white and yellow stand out.

Everything is deterministic in (split, seed, index): scene specs are drawn up front from
string-seeded `random.Random` streams, one per block of 4 images (so an image's scene and captions
do not depend on `n_images`); captions are drawn lazily from their own stream; pixels come from the
spec alone. Train and test are disjoint by construction: object x centres are integer thousandths,
odd in the test split and even in the train split (mirroring keeps the parity).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from PIL import Image, ImageDraw

from teran.data.base import ImageCaptions
from teran.data.scene_captions import captions_for, confusable_group
from teran.data.scenes import (
    BACKGROUNDS,
    COLOURS,
    EXTENT,
    GROUP_SIZE,
    LOCATION_PHRASES,
    RELATION_MARGIN,
    RELATION_PHRASES,
    SHAPE_WORDS,
    SHAPES,
    SIZE_WORDS,
    SPLITS,
    Background,
    Scene,
    SceneObject,
    location,
    random_background,
    random_scene,
    relations,
)


class SyntheticScenes(ImageCaptions):
    """Synthetic compositional scenes (see the module docstring), rendered on demand.

    Indices come in blocks of 4: in the test split every block is a confusable group; in the train
    split about half are, the rest hold 4 independent random scenes."""

    def __init__(
        self, n_images: int, split: str = "train", seed: int = 0, image_size: int = 224
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if n_images < 0 or image_size < 32:
            raise ValueError(
                f"need n_images >= 0 and image_size >= 32, got {n_images}, {image_size}"
            )
        self.n_images, self.split, self.seed, self.image_size = n_images, split, seed, image_size
        self._blocks: list[tuple[list[Scene], bool]] = []
        parity = 1 if split == "test" else 0
        for block in range(-(-n_images // GROUP_SIZE)):
            rng = random.Random(f"teran-synthetic/{split}/{seed}/{block}/scenes")
            if split == "test" or rng.random() < 0.5:
                self._blocks.append((confusable_group(rng, parity), True))
            else:
                scenes = [
                    random_scene(rng, rng.randint(2, 4), parity, random_background(rng))
                    for _ in range(GROUP_SIZE)
                ]
                self._blocks.append((scenes, False))
        self.captions_for: dict[int, list[tuple[str, bool]]] = {}

    def __len__(self) -> int:
        return self.n_images

    def _check(self, index: int) -> int:
        if not 0 <= index < self.n_images:
            raise IndexError(f"index {index} out of range for {self.n_images} images")
        return index

    def scene(self, index: int) -> Scene:
        """The spec of image `index`."""
        self._check(index)
        return self._blocks[index // GROUP_SIZE][0][index % GROUP_SIZE]

    def group(self, index: int) -> int | None:
        """The confusable group of image `index` (its indices: 4g .. 4g+3), or None."""
        return index // GROUP_SIZE if self._blocks[self._check(index) // GROUP_SIZE][1] else None

    def image_id(self, index: int) -> str:
        return f"{self.split}-{self.seed}-{self._check(index):06d}"

    def _drawn(self, index: int) -> list[tuple[str, bool]]:
        if index not in self.captions_for:
            scenes, grouped = self._blocks[self._check(index) // GROUP_SIZE]
            scene = scenes[index % GROUP_SIZE]
            others = [s for s in scenes if s is not scene] if grouped else None
            rng = random.Random(f"teran-synthetic/{self.split}/{self.seed}/{index}/captions")
            self.captions_for[index] = captions_for(scene, others, rng)
        return self.captions_for[index]

    def captions(self, index: int) -> list[str]:
        return [text for text, _ in self._drawn(index)]

    def distinctive_captions(self, index: int) -> list[str]:
        """The captions of image `index` that are false for the other images of its group (so
        the image they were written for is the one right answer); empty outside a group."""
        return [text for text, distinctive in self._drawn(index) if distinctive]

    def image(self, index: int) -> Image.Image:
        return render(self.scene(index), self.image_size)


def object_box(o: SceneObject) -> tuple[float, float, float, float]:
    """The box (x1, y1, x2, y2 fractions) of the pixels `render` draws for `o`."""
    e = EXTENT[o.size]
    if o.shape == "square":
        return (o.x - 0.88 * e, o.y - 0.88 * e, o.x + 0.88 * e, o.y + 0.88 * e)
    if o.shape == "triangle":
        return (o.x - e, o.y - e, o.x + e, o.y + 0.85 * e)
    return (o.x - e, o.y - e, o.x + e, o.y + e)


def named_objects(scene: Scene, words: Sequence[str]) -> list[tuple[int, str, SceneObject]]:
    """(position, kind, object) for every word of `words` that names one object of `scene`: a
    colour word (colours are distinct within a scene), or a shape word right after a colour
    word ("red circle"); kind is "colour" or "shape". Word pieces that split a word are skipped."""
    by_colour = {o.colour: o for o in scene.objects}
    out: list[tuple[int, str, SceneObject]] = []
    for k, word in enumerate(w.lower() for w in words):
        if word in by_colour:
            out.append((k, "colour", by_colour[word]))
        elif word in SHAPE_WORDS and k > 0 and words[k - 1].lower() in by_colour:
            named = by_colour[words[k - 1].lower()]
            if named.shape == SHAPE_WORDS[word]:
                out.append((k, "shape", named))
    return out


def render(scene: Scene, size: int = 224) -> Image.Image:
    """Draw a scene; flat fills without anti-aliasing, so an object's pixels have its exact RGB."""
    bg = scene.background
    tone = BACKGROUNDS[bg.tone]
    img = Image.new("RGB", (size, size), tone)
    draw = ImageDraw.Draw(img)
    light = tuple(c + 10 for c in tone)
    step = max(4, round(bg.period * size / 224))
    if bg.texture == "stripes":
        for k in range(-size, size, step):
            draw.line([(k, 0), (k + size, size)], fill=light, width=2)
    elif bg.texture == "checker":
        for r in range(0, size, step):
            for c in range((r // step) % 2 * step, size, 2 * step):
                draw.rectangle([c, r, c + step - 1, r + step - 1], fill=light)
    elif bg.texture == "dots":
        for r in range(step // 2, size, step):
            for c in range(step // 2, size, step):
                draw.ellipse([c - 1, r - 1, c + 1, r + 1], fill=light)
    for o in scene.objects:
        cx, cy, e, fill = o.x * size, o.y * size, EXTENT[o.size] * size, COLOURS[o.colour]
        if o.shape == "circle":
            draw.ellipse([cx - e, cy - e, cx + e, cy + e], fill=fill)
        elif o.shape == "square":
            draw.rectangle([cx - 0.88 * e, cy - 0.88 * e, cx + 0.88 * e, cy + 0.88 * e], fill=fill)
        elif o.shape == "triangle":
            draw.polygon(
                [(cx, cy - e), (cx + e, cy + 0.85 * e), (cx - e, cy + 0.85 * e)], fill=fill
            )
        else:
            t = 0.36 * e
            draw.rectangle([cx - e, cy - t, cx + e, cy + t], fill=fill)
            draw.rectangle([cx - t, cy - e, cx + t, cy + e], fill=fill)
    return img


__all__ = [
    "COLOURS",
    "LOCATION_PHRASES",
    "RELATION_MARGIN",
    "RELATION_PHRASES",
    "SHAPES",
    "SHAPE_WORDS",
    "SIZE_WORDS",
    "Background",
    "Scene",
    "SceneObject",
    "SyntheticScenes",
    "location",
    "named_objects",
    "object_box",
    "relations",
    "render",
]
