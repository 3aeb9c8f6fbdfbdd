"""Synthetic compositional scenes: determinism, caption truth, confusable test groups, disjointness.

Captions are parsed here with the module's vocabulary only (colour, shape, size, relation and
location words), and checked against the scene specs and the rendered pixels, so a wrong template,
a wrong relation or a wrong drawing fails independently of how the module chose its facts.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from teran.data.base import ImageCaptions
from teran.data.synthetic import (
    COLOURS,
    LOCATION_PHRASES,
    RELATION_MARGIN,
    RELATION_PHRASES,
    SHAPE_WORDS,
    SIZE_WORDS,
    Scene,
    SceneObject,
    SyntheticScenes,
)

Mention = tuple[str | None, str, str]  # size (None: not named), colour, shape


def _alt(words: list[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_MENTION = re.compile(
    rf"\b(?:({_alt(list(SIZE_WORDS))}) )?({_alt(list(COLOURS))}) ({_alt(list(SHAPE_WORDS))})\b"
)
_REL_WORDS = {p: r for r, ps in RELATION_PHRASES.items() for p in ps}
_RELATION = re.compile(rf"\b({_alt(list(_REL_WORDS))})\b")
_LOC_WORDS = {p: k for k, ps in LOCATION_PHRASES.items() for p in ps}
_LOCATION = re.compile(rf"\b({_alt(list(_LOC_WORDS))})\b")


def _parse(caption: str) -> tuple[list[Mention], list[tuple[Mention, str, Mention]], list]:
    """Mentions; relations (subject: last mention before the phrase, object: first after);
    locations (subject: last mention before)."""
    text = caption.lower()
    spans = [
        (m.start(), m.end(), (SIZE_WORDS.get(m[1] or ""), m[2], SHAPE_WORDS[m[3]]))
        for m in _MENTION.finditer(text)
    ]
    mentions = [s[2] for s in spans]
    rels = []
    for m in _RELATION.finditer(text):
        before = [s[2] for s in spans if s[1] <= m.start()]
        after = [s[2] for s in spans if s[0] >= m.end()]
        assert before and after, f"relation without two objects in {caption!r}"
        rels.append((before[-1], _REL_WORDS[m[1]], after[0]))
    locs = []
    for m in _LOCATION.finditer(text):
        before = [s[2] for s in spans if s[1] <= m.start()]
        assert before, f"location without an object in {caption!r}"
        locs.append((before[-1], _LOC_WORDS[m[1]]))
    return mentions, rels, locs


def _find(scene: Scene, mention: Mention) -> SceneObject | None:
    size, colour, shape = mention
    for o in scene.objects:
        if o.colour == colour and o.shape == shape and size in (None, o.size):
            return o
    return None


def _rel_sign(rel: str, a: SceneObject, b: SceneObject) -> float:
    """Positive when `a rel b` holds: how far along the relation's axis."""
    return {"left": b.x - a.x, "right": a.x - b.x, "above": b.y - a.y, "below": a.y - b.y}[rel]


def _false_in(caption: str, scene: Scene) -> bool:
    """The caption names an object the scene lacks, or a relation the scene reverses."""
    mentions, rels, _ = _parse(caption)
    if any(_find(scene, m) is None for m in mentions):
        return True
    for a, rel, b in rels:
        oa, ob = _find(scene, a), _find(scene, b)
        assert oa is not None and ob is not None
        if _rel_sign(rel, oa, ob) < 0:
            return True
    return False


@pytest.fixture(scope="module")
def test_set() -> SyntheticScenes:
    return SyntheticScenes(200, "test", seed=0)


@pytest.fixture(scope="module")
def train_set() -> SyntheticScenes:
    return SyntheticScenes(200, "train", seed=0)


def test_interface_and_ids(test_set: SyntheticScenes) -> None:
    assert isinstance(test_set, ImageCaptions)
    assert len(test_set) == 200
    assert test_set.image_id(7) == "test-0-000007"
    assert len({test_set.image_id(i) for i in range(len(test_set))}) == 200
    im = test_set.image(3)
    assert im.mode == "RGB" and im.size == (224, 224)
    with pytest.raises(IndexError):
        test_set.captions(200)
    with pytest.raises(ValueError):
        SyntheticScenes(4, "val")


def test_determinism() -> None:
    for split in ("train", "test"):
        a, b = SyntheticScenes(40, split, seed=3), SyntheticScenes(40, split, seed=3)
        longer = SyntheticScenes(80, split, seed=3)
        other = SyntheticScenes(40, split, seed=4)
        for i in (0, 5, 17, 39):
            assert a.scene(i) == b.scene(i) == longer.scene(i)
            assert a.captions(i) == b.captions(i) == longer.captions(i)
            assert np.array_equal(np.asarray(a.image(i)), np.asarray(b.image(i)))
        assert [a.scene(i) for i in range(40)] != [other.scene(i) for i in range(40)]
        assert [a.captions(i) for i in range(40)] != [other.captions(i) for i in range(40)]


def test_scene_specs_fit_the_grid(train_set: SyntheticScenes) -> None:
    for i in range(len(train_set)):
        objs = train_set.scene(i).objects
        assert 2 <= len(objs) <= 4
        assert len({o.colour for o in objs}) == len(objs)
        for o in objs:
            assert 0 < o.x < 1 and 0 < o.y < 1


@pytest.mark.parametrize("split", ["train", "test"])
def test_captions_are_true(split: str, request: pytest.FixtureRequest) -> None:
    data: SyntheticScenes = request.getfixturevalue(f"{split}_set")
    for i in range(len(data)):
        scene, caps = data.scene(i), data.captions(i)
        assert len(caps) == 5 and len(set(caps)) == 5
        for cap in caps:
            assert cap.endswith(".") and cap.count(".") == 1 and len(cap) > 10
            assert cap[0].isupper()
            mentions, rels, locs = _parse(cap)
            assert mentions, f"no colour+shape in {cap!r}"
            for m in mentions:
                assert _find(scene, m) is not None, f"{cap!r} names {m} absent from {scene}"
            for a, rel, b in rels:
                oa, ob = _find(scene, a), _find(scene, b)
                assert oa is not None and ob is not None and oa != ob
                assert _rel_sign(rel, oa, ob) >= RELATION_MARGIN, f"{cap!r} false for {scene}"
            for m, loc in locs:
                o = _find(scene, m)
                assert o is not None
                assert ("left" not in loc or o.x < 0.4) and ("right" not in loc or o.x > 0.6)
                assert ("top" not in loc or o.y < 0.4) and ("bottom" not in loc or o.y > 0.6)
                assert loc != "centre" or (abs(o.x - 0.5) < 0.15 and abs(o.y - 0.5) < 0.15)
            count = re.match(r"(Two|Three|Four) shapes", cap)
            if count:
                assert ["Two", "Three", "Four"].index(count[1]) + 2 == len(scene.objects)


def test_pixels_match_spec(test_set: SyntheticScenes) -> None:
    for i in range(0, 40, 3):
        pixels = np.asarray(test_set.image(i))
        for o in test_set.scene(i).objects:
            assert tuple(pixels[int(o.y * 224), int(o.x * 224)]) == COLOURS[o.colour]
        # no object colour on the background, far from every object (corners of the image)
        for y, x in ((1, 1), (1, 222), (222, 1), (222, 222)):
            assert tuple(pixels[y, x]) not in COLOURS.values()
    big = SyntheticScenes(4, "test", image_size=448)
    o = big.scene(0).objects[0]
    assert tuple(np.asarray(big.image(0))[int(o.y * 448), int(o.x * 448)]) == COLOURS[o.colour]


def test_small_objects_fill_a_grid_cell(test_set: SyntheticScenes) -> None:
    for i in range(40):
        pixels = np.asarray(test_set.image(i)).astype(int)
        for o in test_set.scene(i).objects:
            hit = np.all(pixels == np.array(COLOURS[o.colour]), axis=-1)
            ys, xs = np.nonzero(hit)
            assert xs.max() - xs.min() >= 40 and ys.max() - ys.min() >= 40


def test_test_groups_are_confusable(test_set: SyntheticScenes) -> None:
    for g in range(len(test_set) // 4):
        idx = list(range(4 * g, 4 * g + 4))
        assert all(test_set.group(i) == g for i in idx)
        scenes = [test_set.scene(i) for i in idx]
        shapes = {tuple(sorted(o.shape for o in s.objects)) for s in scenes}
        colours = {tuple(sorted(o.colour for o in s.objects)) for s in scenes}
        assert len(shapes) == 1 and len(colours) == 1
        assert len({frozenset(s.objects) for s in scenes}) == 4
        # colour and shape words of a caption are all present in every member: word matching on
        # content alone cannot pick the right image
        for i in idx:
            for cap in test_set.captions(i):
                content = {w for m in _parse(cap)[0] for w in m[1:]}
                for s in scenes:
                    assert content <= {w for o in s.objects for w in (o.colour, o.shape)}


def test_test_captions_discriminate_within_group(test_set: SyntheticScenes) -> None:
    for i in range(len(test_set)):
        own = test_set.scene(i)
        others = [test_set.scene(j) for j in range(4 * (i // 4), 4 * (i // 4) + 4) if j != i]
        caps = test_set.captions(i)
        with_rel = [c for c in caps if _parse(c)[1]]
        assert len(with_rel) >= 3
        discriminative = [c for c in caps if all(_false_in(c, s) for s in others)]
        assert len(discriminative) >= 3, (caps, own, others)
        assert not any(_false_in(c, own) for c in caps)


def test_train_mixes_groups_and_random_scenes(train_set: SyntheticScenes) -> None:
    groups = {train_set.group(i) for i in range(len(train_set))}
    assert None in groups and len(groups) > 10


def test_train_and_test_disjoint(train_set: SyntheticScenes, test_set: SyntheticScenes) -> None:
    train = {train_set.scene(i) for i in range(len(train_set))}
    test = {test_set.scene(i) for i in range(len(test_set))}
    assert len(test) == len(test_set) and not train & test
    train_layouts = {frozenset((o.x, o.y) for o in s.objects) for s in train}
    assert not train_layouts & {frozenset((o.x, o.y) for o in s.objects) for s in test}
