"""The synthetic scenes' world: shapes, colours, sizes and backgrounds, the relations between
objects, and the random draws of scenes and of their confusable variants (`synthetic.py`
explains what the scenes are for)."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from itertools import combinations

RGB = tuple[int, int, int]

COLOURS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "green": (40, 180, 70),
    "blue": (50, 90, 235),
    "yellow": (245, 215, 40),
    "purple": (150, 70, 200),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = ("small", "large")
SHAPE_WORDS = {
    "circle": "circle",
    "disc": "circle",
    "square": "square",
    "triangle": "triangle",
    "cross": "cross",
}
"""Every word a caption may use for a shape -> the shape."""
SIZE_WORDS = {"small": "small", "little": "small", "large": "large", "big": "large"}
"""Every word a caption may use for a size -> the size."""
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("to the left of", "left of"),
    "right": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
"""Relation of the object named before the phrase to the object named after it."""
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
LOCATION_PHRASES: dict[str, tuple[str, ...]] = {
    "top left": ("in the top left corner", "at the top left"),
    "top right": ("in the top right corner", "at the top right"),
    "bottom left": ("in the bottom left corner", "at the bottom left"),
    "bottom right": ("in the bottom right corner", "at the bottom right"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "left": ("on the left", "on the left side"),
    "right": ("on the right", "on the right side"),
    "centre": ("in the centre", "in the middle"),
}
"""Where the object named before the phrase sits in the image."""
EXTENT = {"small": 0.105, "large": 0.17}
"""Half side of an object's box as a fraction of the image side (47 px and 76 px at 224)."""
RELATION_MARGIN = 0.12
"""Centres must differ by this much (27 px at 224) along an axis for a relation to be stated."""
GAP, PAD = 0.04, 0.02
"""Minimum free space between object boxes, and between a box and the image border."""
BACKGROUNDS: dict[str, RGB] = {
    "charcoal": (46, 46, 52),
    "slate": (44, 54, 68),
    "umber": (62, 52, 44),
    "grey": (78, 78, 80),
}
TEXTURES = ("plain", "stripes", "checker", "dots")
SPLITS = ("train", "test")
GROUP_SIZE = 4

SHAPE_SYNONYMS = {s: tuple(w for w, t in SHAPE_WORDS.items() if t == s) for s in SHAPES}
SIZE_SYNONYMS = {s: tuple(w for w, t in SIZE_WORDS.items() if t == s) for s in SIZES}
COUNT_WORDS = {2: "two", 3: "three", 4: "four"}


@dataclass(frozen=True)
class SceneObject:
    """One shape; (x, y) is its centre as fractions of the image side, y growing downwards."""

    shape: str
    colour: str
    size: str
    x: float
    y: float


@dataclass(frozen=True)
class Background:
    """A dark tone with a faint pattern of `period` px (at 224) so backgrounds are not all flat."""

    tone: str
    texture: str
    period: int


@dataclass(frozen=True)
class Scene:
    """What an image shows; colours are distinct within a scene, so colour+shape names an object."""

    objects: tuple[SceneObject, ...]
    background: Background


def relations(a: SceneObject, b: SceneObject) -> list[str]:
    """Relations of `a` to `b` that hold by `RELATION_MARGIN`, the dominant axis first (never
    empty for two objects of a scene: their boxes are apart along some axis by more than that)."""
    dx, dy = b.x - a.x, b.y - a.y
    axes = sorted(
        [(abs(dx), "left" if dx > 0 else "right"), (abs(dy), "above" if dy > 0 else "below")]
    )
    # the minor axis only counts when it is at least half the major one: a shape far to the right
    # and a little lower is not described as "below"
    return [rel for d, rel in reversed(axes) if d >= max(RELATION_MARGIN, axes[1][0] / 2)]


def location(o: SceneObject) -> str | None:
    """The `LOCATION_PHRASES` key that clearly holds for `o`, or None when it sits near a border."""

    def band(v: float, low: str, high: str) -> str | None:
        return low if v < 0.34 else high if v > 0.66 else "centre" if 0.4 <= v <= 0.6 else None

    h, v = band(o.x, "left", "right"), band(o.y, "top", "bottom")
    h_side, v_side = h in ("left", "right"), v in ("top", "bottom")
    if h_side and v_side:
        return f"{v} {h}"
    if v_side or h_side:
        return v if v_side else h
    return "centre" if h == v == "centre" else None


def _apart(a: SceneObject, b: SceneObject) -> bool:
    """Boxes separated by at least GAP along some axis (so some relation always holds)."""
    need = EXTENT[a.size] + EXTENT[b.size] + GAP
    return abs(a.x - b.x) >= need or abs(a.y - b.y) >= need


def random_scene(rng: random.Random, n: int, parity: int, background: Background) -> Scene:
    """Rejection-sample n non-overlapping objects with distinct colours (shapes may repeat)."""
    while True:
        colours = rng.sample(list(COLOURS), n)
        placed: list[SceneObject] = []
        for colour in colours:
            size = rng.choice(SIZES)
            lo, hi = (
                round((EXTENT[size] + PAD) * 1000) + 1,
                round((1 - EXTENT[size] - PAD) * 1000) - 1,
            )
            for _ in range(100):
                kx, ky = rng.randint(lo, hi), rng.randint(lo, hi)
                kx = kx if kx % 2 == parity else kx + 1 if kx < hi else kx - 1
                o = SceneObject(rng.choice(SHAPES), colour, size, kx / 1000, ky / 1000)
                if all(_apart(o, p) for p in placed):
                    placed.append(o)
                    break
            else:
                break
        if len(placed) == n:
            return Scene(tuple(placed), background)


def random_background(rng: random.Random) -> Background:
    return Background(rng.choice(list(BACKGROUNDS)), rng.choice(TEXTURES), rng.choice((8, 12, 16)))


def scene_variants(scene: Scene) -> list[Scene]:
    """Same shapes and colours, other bindings (colour swaps) and/or layouts (mirror, flip)."""
    objs = scene.objects
    bindings = [objs]
    for i, j in combinations(range(len(objs)), 2):
        if objs[i].shape != objs[j].shape:
            swapped = list(objs)
            swapped[i], swapped[j] = (
                replace(objs[i], colour=objs[j].colour),
                replace(objs[j], colour=objs[i].colour),
            )
            bindings.append(tuple(swapped))

    def move(o: SceneObject, mx: bool, fy: bool) -> SceneObject:
        x = (1000 - round(o.x * 1000)) / 1000 if mx else o.x
        return replace(o, x=x, y=(1000 - round(o.y * 1000)) / 1000 if fy else o.y)

    out = [
        Scene(tuple(move(o, mx, fy) for o in b), scene.background)
        for b in bindings
        for mx in (False, True)
        for fy in (False, True)
    ]
    return [s for s in out if frozenset(s.objects) != frozenset(objs)]
