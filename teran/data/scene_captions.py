"""Captions of the synthetic scenes: facts (bindings, relations, locations) planned so that a
caption is true for its scene and false for the rest of its confusable group."""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import permutations

from teran.data.scenes import (
    COUNT_WORDS,
    GROUP_SIZE,
    LOCATION_PHRASES,
    OPPOSITE,
    RELATION_PHRASES,
    SHAPE_SYNONYMS,
    SIZE_SYNONYMS,
    Scene,
    location,
    random_background,
    random_scene,
    relations,
    scene_variants,
)


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


def confusable_group(rng: random.Random, parity: int) -> list[Scene]:
    """4 confusable scenes, each with a relation caption that is false for the other three."""
    while True:
        base = random_scene(rng, rng.choice((2, 3, 3, 4, 4)), parity, random_background(rng))
        if len({o.shape for o in base.objects}) < 2:
            continue
        variants = scene_variants(base)
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
        words = [rng.choice(SIZE_SYNONYMS[o.size])] if size else []
        words += [o.colour, rng.choice(SHAPE_SYNONYMS[o.shape])]
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
                templates.append(f"{COUNT_WORDS[n].capitalize()} shapes: {{items}}.")
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


def captions_for(
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
