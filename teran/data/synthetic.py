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
from dataclasses import dataclass, replace
from itertools import combinations, permutations

from PIL import Image, ImageDraw

from teran.data.base import ImageCaptions

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

_SHAPE_SYNONYMS = {s: tuple(w for w, t in SHAPE_WORDS.items() if t == s) for s in SHAPES}
_SIZE_SYNONYMS = {s: tuple(w for w, t in SIZE_WORDS.items() if t == s) for s in SIZES}
_COUNTS = {2: "two", 3: "three", 4: "four"}


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


def _random_scene(rng: random.Random, n: int, parity: int, background: Background) -> Scene:
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


def _random_background(rng: random.Random) -> Background:
    return Background(rng.choice(list(BACKGROUNDS)), rng.choice(TEXTURES), rng.choice((8, 12, 16)))


def _variants(scene: Scene) -> list[Scene]:
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


@dataclass(frozen=True)
class _Rel:
    """Caption fact: object a (index in its scene) is `rel` of object b; sa/sb: sizes named."""

    a: int
    rel: str
    b: int
    sa: bool = False
    sb: bool = False


def _rel_false(fact: _Rel, scene: Scene, other: Scene) -> bool:
    """Whether `other` clearly contradicts the fact: an object missing or resized, or the
    opposite relation holding by the margin."""
    a, b = scene.objects[fact.a], scene.objects[fact.b]
    found = {(o.colour, o.shape): o for o in other.objects}
    a2, b2 = found.get((a.colour, a.shape)), found.get((b.colour, b.shape))
    if a2 is None or b2 is None:
        return True
    if (fact.sa and a2.size != a.size) or (fact.sb and b2.size != b.size):
        return True
    return OPPOSITE[fact.rel] in relations(a2, b2)


def _plans(scene: Scene, others: list[Scene], rng: random.Random | None) -> list[tuple[_Rel, ...]]:
    """One or two relation facts that together are false in every other group member.

    Sizes are named at random when `rng` is given; naming a size only adds contradictions."""
    objs = scene.objects

    def flag() -> bool:
        return rng is not None and rng.random() < 0.3

    facts = [
        _Rel(a, r, b, flag(), flag())
        for a, b in permutations(range(len(objs)), 2)
        for r in relations(objs[a], objs[b])
    ]
    full = frozenset(range(len(others)))
    cov = {f: frozenset(k for k, o in enumerate(others) if _rel_false(f, scene, o)) for f in facts}
    plans: list[tuple[_Rel, ...]] = [(f,) for f in facts if cov[f] == full]
    for f, g in permutations(facts, 2):
        same = (
            (f.a, f.b) == (g.a, g.b) and f.rel in ("above", "below") and g.rel in ("left", "right")
        )
        if (
            (same or {f.a, f.b} != {g.a, g.b})
            and cov[f] != full != cov[g]
            and cov[f] | cov[g] == full
        ):
            plans.append((f, g))
    return plans


def _group(rng: random.Random, parity: int) -> list[Scene]:
    """4 confusable scenes, each with a relation caption that is false for the other three."""
    while True:
        base = _random_scene(rng, rng.choice((2, 3, 3, 4, 4)), parity, _random_background(rng))
        if len({o.shape for o in base.objects}) < 2:
            continue
        variants = _variants(base)
        rng.shuffle(variants)
        members = [base]
        for v in variants:
            if len(members) < GROUP_SIZE and all(
                frozenset(v.objects) != frozenset(m.objects) for m in members
            ):
                members.append(v)
        if len(members) == GROUP_SIZE and all(
            _plans(m, [o for o in members if o is not m], None) for m in members
        ):
            rng.shuffle(members)
            return members


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class _Writer:
    """Turns facts about one scene into sentences, with synonyms and several templates."""

    def __init__(self, scene: Scene, rng: random.Random) -> None:
        self.objs, self.rng = scene.objects, rng
        self.seen: set[int] = set()
        """Objects already named in the current sentence: named again with "the"."""

    def name(self, i: int, size: bool, first: bool) -> str:
        o, rng = self.objs[i], self.rng
        words = [rng.choice(_SIZE_SYNONYMS[o.size])] if size else []
        words += [o.colour, rng.choice(_SHAPE_SYNONYMS[o.shape])]
        definite = i in self.seen or (not first and rng.random() < 0.4)
        self.seen.add(i)
        return " ".join(["the" if definite else _article(words[0]), *words])

    def rel(self, r: str) -> str:
        return self.rng.choice(RELATION_PHRASES[r])

    def loc(self, i: int) -> str:
        key = location(self.objs[i])
        assert key is not None
        return self.rng.choice(LOCATION_PHRASES[key])

    def plan(self, facts: tuple[_Rel, ...]) -> str:
        """A sentence stating the facts (and maybe a true location)."""
        rng, f, self.seen = self.rng, facts[0], set()
        a, b = self.name(f.a, f.sa, True), self.name(f.b, f.sb, False)
        if len(facts) == 1:
            if location(self.objs[f.a]) is not None and rng.random() < 0.3:
                tpl = rng.choice(("{a} {l}, {r} {b}.", "There is {a} {l}, {r} {b}."))
                return tpl.format(a=a, l=self.loc(f.a), r=self.rel(f.rel), b=b)
            templates = [
                "{a} {r} {b}.",
                "{a} is {r} {b}.",
                "There is {a} {r} {b}.",
                "{a} sits {r} {b}.",
            ]
            templates += ["An image of {a} {r} {b}.", "A picture showing {a} {r} {b}."]
            if len(self.objs) == 2:
                templates.append("Two shapes: {a} {r} {b}.")
            return rng.choice(templates).format(a=a, r=self.rel(f.rel), b=b)
        g = facts[1]
        if (f.a, f.b) == (g.a, g.b):
            return f"{a} {self.rel(f.rel)} and {self.rel(g.rel)} {b}."
        if g.a == f.b:
            b = self.name(f.b, f.sb or g.sa, False)
            tpl = rng.choice(
                ("{a} is {r} {b}, which is {r2} {c}.", "{a} {r} {b}, which is {r2} {c}.")
            )
            return tpl.format(
                a=a, r=self.rel(f.rel), b=b, r2=self.rel(g.rel), c=self.name(g.b, g.sb, False)
            )
        tpl = rng.choice(("{a} {r} {b}, and {c} {r2} {d}.", "{a} is {r} {b} and {c} is {r2} {d}."))
        c, d = self.name(g.a, g.sa, False), self.name(g.b, g.sb, False)
        return tpl.format(a=a, r=self.rel(f.rel), b=b, c=c, r2=self.rel(g.rel), d=d)

    def random(self) -> str:
        """Any true sentence: relations, locations or a list of objects."""
        rng, n, self.seen = self.rng, len(self.objs), set()
        located = [i for i in range(n) if location(self.objs[i]) is not None]
        kind = rng.choice(("rel", "rel", "rel", "rel2", "loc", "list"))
        size = [rng.random() < 0.35 for _ in range(n)]
        if kind == "loc" and located:
            if len(located) >= 2 and rng.random() < 0.5:
                i, j = rng.sample(located, 2)
                a, b = self.name(i, size[i], True), self.name(j, size[j], False)
                return f"{a} {self.loc(i)} and {b} {self.loc(j)}."
            i = rng.choice(located)
            a = self.name(i, size[i], True)
            return rng.choice(("{a} {l}.", "There is {a} {l}.")).format(a=a, l=self.loc(i))
        if kind == "list":
            picked = sorted(rng.sample(range(n), rng.randint(min(2, n), n)))
            names = [self.name(i, size[i], True) for i in picked]
            items = ", ".join(names[:-1]) + " and " + names[-1]
            templates = ["{items}.", "An image with {items}.", "Coloured shapes: {items}."]
            if len(picked) == n:
                templates.append(f"{_COUNTS[n].capitalize()} shapes: {{items}}.")
            return rng.choice(templates).format(items=items)
        pairs = list(permutations(range(n), 2))
        f = self._pick(pairs, size)
        if kind == "rel2" and n >= 3:
            return self.plan((f, self._pick([p for p in pairs if set(p) != {f.a, f.b}], size)))
        return self.plan((f,))

    def _pick(self, pairs: list[tuple[int, int]], size: list[bool]) -> _Rel:
        a, b = self.rng.choice(pairs)
        rel = self.rng.choice(relations(self.objs[a], self.objs[b]))
        return _Rel(a, rel, b, size[a], size[b])


def _captions(
    scene: Scene, others: list[Scene] | None, rng: random.Random
) -> list[tuple[str, bool]]:
    """5 distinct true captions, each with whether it is false for every other group member; for
    a group member the first 3 are drawn from `_plans` (those are the distinctive ones)."""
    writer, out = _Writer(scene, rng), list[tuple[str, bool]]()
    plans = _plans(scene, others, rng) if others else []
    for tries in range(400):
        if len(out) == 5:
            break
        distinctive = bool(plans) and len(out) < 3
        text = writer.plan(rng.choice(plans)) if distinctive else writer.random()
        text = text[0].upper() + text[1:]
        if all(text != t for t, _ in out) or tries > 300:
            out.append((text, distinctive))
    rng.shuffle(out)
    return out


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
                self._blocks.append((_group(rng, parity), True))
            else:
                scenes = [
                    _random_scene(rng, rng.randint(2, 4), parity, _random_background(rng))
                    for _ in range(GROUP_SIZE)
                ]
                self._blocks.append((scenes, False))
        self._captions: dict[int, list[tuple[str, bool]]] = {}

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
        if index not in self._captions:
            scenes, grouped = self._blocks[self._check(index) // GROUP_SIZE]
            scene = scenes[index % GROUP_SIZE]
            others = [s for s in scenes if s is not scene] if grouped else None
            rng = random.Random(f"teran-synthetic/{self.split}/{self.seed}/{index}/captions")
            self._captions[index] = _captions(scene, others, rng)
        return self._captions[index]

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
