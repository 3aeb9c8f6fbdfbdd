"""One behavioural suite for every VectorStore backend.

The same tests run on QdrantStore (local ":memory:" and path mode) and EdgeStore, so services can
swap backends without re-learning semantics: exact MaxSim equal to numpy, filters, overwrite,
delete reports, model-version isolation, persistence and crash durability.
"""

from __future__ import annotations

import functools
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from services.store import (
    AnyOf,
    Equals,
    Hit,
    PayloadFilter,
    Source,
    StoredImage,
    StoredSentence,
    StoreError,
    StoreUnavailable,
    VectorStore,
)
from services.store.edge import EdgeStore
from services.store.naming import point_id
from services.store.qdrant import QdrantStore

REPO = Path(__file__).resolve().parents[2]
DIM = 32
V1 = "v1"

COVER = 1000
"""A candidate count above every collection here: two-stage search is then exact."""

KINDS = ["qdrant-memory", "qdrant-path", "edge"]
PERSISTENT = ["qdrant-path", "edge"]


@dataclass
class Backend:
    kind: str
    root: Path

    def make(self, **kwargs: object) -> VectorStore:
        if self.kind == "qdrant-memory":
            return QdrantStore(QdrantClient(":memory:"))
        if self.kind == "qdrant-path":
            return QdrantStore(QdrantClient(path=str(self.root / "qdrant")))
        return EdgeStore(self.root / "edge", **kwargs)  # type: ignore[arg-type]

    def opened(self, version: str = V1, dim: int = DIM) -> VectorStore:
        store = self.make()
        store.open(version, dim)
        return store


def _backend_fixture(kinds: list[str]) -> Callable[..., Iterator[Backend]]:
    @pytest.fixture(params=kinds)
    def fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
        yield Backend(request.param, tmp_path)

    return fixture


backend = _backend_fixture(KINDS)
persistent_backend = _backend_fixture(PERSISTENT)


@pytest.fixture
def store(backend: Backend) -> Iterator[VectorStore]:
    s = backend.opened()
    yield s
    s.close()


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def image(rng: np.random.Generator, i: int | str, size: int = 6, **payload: object) -> StoredImage:
    boxes = rng.uniform(0, 1, (size, 4)).astype(np.float32)
    return StoredImage(
        f"img-{i}", unit(rng, size), boxes, uri=f"s3://bucket/{i}.jpg", payload=payload
    )


def sentence(
    rng: np.random.Generator, i: int | str, size: int = 5, **payload: object
) -> StoredSentence:
    tokens = [f"tok{j}" for j in range(size)]
    return StoredSentence(f"sen-{i}", f"a sentence number {i}", unit(rng, size), tokens, payload)


def maxsim(query: np.ndarray, stored: list[np.ndarray]) -> np.ndarray:
    """Reference score: sum over query vectors of the max dot product over stored vectors."""
    q = query.astype(np.float64)
    return np.array([(q @ s.astype(np.float64).T).max(axis=1).sum() for s in stored])


def assert_ranking(hits: list, ids: list[str], scores: np.ndarray, limit: int) -> None:
    """Hits are numpy's top-`limit`: same scores per rank, ids equal except within exact ties."""
    order = np.argsort(-scores, kind="stable")[:limit]
    assert len(hits) == len(order)
    by_id = dict(zip(ids, scores, strict=True))
    assert len({h.id for h in hits}) == len(hits)
    for rank, (hit, idx) in enumerate(zip(hits, order, strict=True)):
        assert hit.score == pytest.approx(scores[idx], abs=1e-4), rank
        assert by_id[hit.id] == pytest.approx(scores[idx], abs=1e-4), rank
    tied = np.abs(np.diff(scores[order])) < 1e-4
    for rank, hit in enumerate(hits):
        if not (rank > 0 and tied[rank - 1]) and not (rank < len(tied) and tied[rank]):
            assert hit.id == ids[order[rank]], rank


# -- round trips -------------------------------------------------------------------------------


def test_image_round_trip(store: VectorStore) -> None:
    rng = np.random.default_rng(0)
    items = [
        image(rng, 0, 3, split="test", n=3, w=0.5, ok=True, tags=["a", "b"]),
        image(rng, 1, 7),
        image(rng, "ünïcode/ id with spaces", 1, nested={"k": [1, 2]}),
    ]
    store.live().images.upsert(items)
    got = store.live().images.get([items[2].id, "missing", items[0].id, items[1].id])
    assert got[1] is None
    for want, have in zip([items[2], items[0], items[1]], [got[0], got[2], got[3]], strict=True):
        assert have is not None
        assert have.id == want.id
        assert have.regions.dtype == np.float32 and have.regions.shape == want.regions.shape
        np.testing.assert_allclose(have.regions, want.regions, atol=1e-6, rtol=0)
        np.testing.assert_allclose(have.boxes, want.boxes, atol=1e-6, rtol=0)
        assert have.uri == want.uri
        assert have.payload == want.payload
    # JSON types survive (True == 1 in Python, so compare types too).
    assert got[2] is not None
    assert [type(got[2].payload[k]) for k in ("split", "n", "w", "ok")] == [str, int, float, bool]
    assert store.live().images.get([]) == []
    assert store.live().images.count() == 3
    assert store.live().sentences.count() == 0


def test_sentence_round_trip(store: VectorStore) -> None:
    rng = np.random.default_rng(1)
    items = [sentence(rng, 0, 4, lang="en", n=2), sentence(rng, 1, 9)]
    store.live().sentences.upsert(items)
    got = store.live().sentences.get([items[1].id, "nope", items[0].id])
    assert got[1] is None
    for want, have in zip([items[1], items[0]], [got[0], got[2]], strict=True):
        assert have is not None
        assert (have.id, have.text, have.tokens) == (want.id, want.text, want.tokens)
        np.testing.assert_allclose(have.words, want.words, atol=1e-6, rtol=0)
        assert have.payload == want.payload
    assert store.live().sentences.count() == 2
    assert store.live().images.count() == 0


def test_reupsert_overwrites(store: VectorStore) -> None:
    rng = np.random.default_rng(2)
    first = image(rng, "x", 4, old=1)
    second = StoredImage("img-x", unit(rng, 9), np.zeros((9, 4), np.float32), "u2", {"new": 2})
    store.live().images.upsert([first])
    store.live().images.upsert([second])
    (got,) = store.live().images.get(["img-x"])
    assert got is not None
    np.testing.assert_allclose(got.regions, second.regions, atol=1e-6, rtol=0)
    assert got.boxes.shape == (9, 4) and got.uri == "u2"
    assert got.payload == {"new": 2}
    assert store.live().images.count() == 1

    s1, s2 = sentence(rng, "y", 3, a=1), sentence(rng, "y", 6)
    store.live().sentences.upsert([s1])
    store.live().sentences.upsert([s2])
    (gs,) = store.live().sentences.get(["sen-y"])
    assert gs is not None and gs.tokens == s2.tokens and gs.payload == {}
    assert store.live().sentences.count() == 1


# -- search ------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["images", "sentences"])
def test_search_is_exact_maxsim(store: VectorStore, side: str) -> None:
    rng = np.random.default_rng(3)
    sizes = rng.integers(5, 21, size=200)
    search: Callable[..., list[Hit]]
    if side == "images":
        imgs = [image(rng, i, int(n)) for i, n in enumerate(sizes)]
        store.live().images.upsert(imgs)
        ids, vecs = [x.id for x in imgs], [x.regions for x in imgs]
        search = functools.partial(store.live().images.search, candidates=COVER)
    else:
        sens = [sentence(rng, i, int(n)) for i, n in enumerate(sizes)]
        store.live().sentences.upsert(sens)
        ids, vecs = [x.id for x in sens], [x.words for x in sens]
        search = functools.partial(store.live().sentences.search, candidates=COVER)
    for q_len, limit in [(12, 100), (1, 10), (36, 500)]:
        query = unit(rng, q_len)
        assert_ranking(search(query, limit), ids, maxsim(query, vecs), limit)


def test_filters(store: VectorStore) -> None:
    rng = np.random.default_rng(4)
    meta = [
        {
            "split": "test" if i % 2 else "train",
            "n": i % 4,
            "flag": i % 3 == 0,
            "w": [0.25, 0.5][i % 2],
        }
        for i in range(40)
    ]
    imgs = [image(rng, i, int(rng.integers(3, 8)), **meta[i]) for i in range(40)]
    store.live().images.upsert(imgs)
    sens = [sentence(rng, i, 4, **meta[i]) for i in range(40)]
    store.live().sentences.upsert(sens)
    query = unit(rng, 12)
    cases: list[tuple[PayloadFilter, Callable[[dict], bool]]] = [
        (PayloadFilter([Equals("split", "test")]), lambda p: p["split"] == "test"),
        (PayloadFilter([AnyOf("n", [1, 3])]), lambda p: p["n"] in (1, 3)),
        (PayloadFilter([Equals("flag", True)]), lambda p: p["flag"]),
        (PayloadFilter([Equals("w", 0.25)]), lambda p: p["w"] == 0.25),
        (
            PayloadFilter([Equals("split", "train"), AnyOf("n", [0, 2, 3]), Equals("flag", False)]),
            lambda p: p["split"] == "train" and p["n"] in (0, 2, 3) and not p["flag"],
        ),
        # Mixed-type any_of: an OR across types, ANDed with the rest.
        (
            PayloadFilter([AnyOf("n", [3, "x", 2.0]), Equals("split", "test")]),
            lambda p: p["n"] == 3 and p["split"] == "test",
        ),
        (PayloadFilter([Equals("split", "nowhere")]), lambda p: False),
        # Floats compare numerically (2.0 matches a stored 2); bools are not integers.
        (PayloadFilter([Equals("n", 2.0)]), lambda p: p["n"] == 2),
        (PayloadFilter([Equals("n", True)]), lambda p: False),
        (PayloadFilter([AnyOf("flag", [1, 0])]), lambda p: False),
        (PayloadFilter([]), lambda p: True),
    ]
    for flt, pred in cases:
        keep = [i for i in range(40) if pred(meta[i])]
        img_scores = maxsim(query, [imgs[i].regions for i in keep])
        hits = store.live().images.search(query, 100, flt, candidates=COVER)
        assert_ranking(hits, [imgs[i].id for i in keep], img_scores, 100)
        sen_hits = store.live().sentences.search(query, 100, flt, candidates=COVER)
        assert sorted(h.id for h in sen_hits) == sorted(sens[i].id for i in keep), flt
    # Unfiltered = filter with no conditions; limit cuts after filtering.
    assert len(store.live().images.search(query, 5, PayloadFilter([Equals("split", "test")]))) == 5


def test_bad_filters_raise_value_error(store: VectorStore) -> None:
    bad: list[tuple[object, str]] = [
        ([Equals("", 1)], "non-empty"),
        ([Equals("k", None)], "not str, int, float or bool"),  # type: ignore[arg-type]
        ([Equals("k", [1])], "not str, int, float or bool"),  # type: ignore[arg-type]
        ([Equals("k", float("nan"))], "not finite"),
        ([Equals("k", 2**70)], "int64"),
        ([AnyOf("k", [])], "non-empty list"),
        ([AnyOf("k", [1, {"a": 1}])], "not str, int, float or bool"),  # type: ignore[list-item]
        ([AnyOf("k", "ab")], "non-empty list"),
        ([Equals("_id", "x")], "reserved"),
        ([Equals(3, 1)], "non-empty string"),  # type: ignore[arg-type]
        (["split=test"], "not an Equals or AnyOf"),
        ([Equals("ok", 1), {"key": "k"}], "#1"),
    ]
    for conditions, fragment in bad:
        with pytest.raises(ValueError, match="bad filter condition") as err:
            PayloadFilter(conditions)  # type: ignore[arg-type]
        assert fragment in str(err.value), (conditions, str(err.value))
    with pytest.raises(ValueError, match="sequence of conditions"):
        PayloadFilter("split")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="PayloadFilter"):
        store.live().images.search(np.ones((1, DIM), np.float32), 5, {"split": "x"})  # type: ignore[arg-type]


# -- delete and counts -------------------------------------------------------------------------


def test_delete_reports_missing(store: VectorStore) -> None:
    rng = np.random.default_rng(5)
    imgs = [image(rng, i) for i in range(5)]
    sens = [sentence(rng, i) for i in range(4)]
    store.live().images.upsert(imgs)
    store.live().sentences.upsert(sens)
    assert (store.live().images.count(), store.live().sentences.count()) == (5, 4)

    missing = store.live().images.delete(["img-1", "ghost", "img-3", "img-1", "ghost2"])
    assert missing == ["ghost", "ghost2"]
    assert store.live().images.count() == 3
    assert store.live().images.get(["img-1", "img-0"])[0] is None
    hits = store.live().images.search(unit(rng, 4), 10)
    assert {h.id for h in hits} == {"img-0", "img-2", "img-4"}
    assert store.live().images.delete(["img-1"]) == ["img-1"]
    assert store.live().images.delete([]) == []

    assert store.live().sentences.delete(["sen-0", "img-0"]) == ["img-0"]
    assert (store.live().images.count(), store.live().sentences.count()) == (3, 3)
    assert {h.id for h in store.live().sentences.search(unit(rng, 4), 10)} == {
        "sen-1",
        "sen-2",
        "sen-3",
    }


# -- validation --------------------------------------------------------------------------------


def test_reserved_and_invalid_input(store: VectorStore) -> None:
    rng = np.random.default_rng(6)
    with pytest.raises(ValueError, match="'_uri' is reserved"):
        store.live().images.upsert([image(rng, 0), image(rng, 1, _uri="evil")])
    with pytest.raises(ValueError, match="'_tokens' is reserved"):
        store.live().sentences.upsert([sentence(rng, 0, _tokens=["x"])])
    ok = image(rng, 9)
    bad_images = [
        (StoredImage("a", unit(rng, 3, DIM + 1), np.zeros((3, 4))), "expected shape"),
        (StoredImage("a", 2 * unit(rng, 3), np.zeros((3, 4))), "L2-normalised"),
        (StoredImage("a", unit(rng, 3), np.zeros((2, 4))), "boxes"),
        (StoredImage("a", np.zeros((0, DIM)), np.zeros((0, 4))), "expected shape"),
        (StoredImage("", unit(rng, 3), np.zeros((3, 4))), "non-empty strings"),
    ]
    for bad, fragment in bad_images:
        with pytest.raises(ValueError, match=fragment):
            store.live().images.upsert([ok, bad])
    with pytest.raises(ValueError, match="appears twice"):
        store.live().images.upsert([ok, ok])
    with pytest.raises(ValueError, match="tokens"):
        store.live().sentences.upsert([StoredSentence("s", "t", unit(rng, 3), ["a", "b"])])
    assert (store.live().images.count(), store.live().sentences.count()) == (0, 0)
    with pytest.raises(ValueError, match="limit"):
        store.live().images.search(unit(rng, 2), 0)
    with pytest.raises(ValueError, match="expected shape"):
        store.live().sentences.search(unit(rng, 2, DIM - 1), 5)
    with pytest.raises(ValueError, match="model_version"):
        store.open("../escape", DIM)


def test_lifecycle_errors(backend: Backend) -> None:
    s = backend.make()
    with pytest.raises(StoreUnavailable, match="not opened"):
        s.live().images.count()
    s.open(V1, DIM)
    assert s.healthy()
    s.close()
    assert not s.healthy()
    with pytest.raises(StoreUnavailable, match="closed"):
        s.live().images.search(np.ones((1, DIM), np.float32), 1)
    s.close()  # idempotent


# -- model versions and persistence ------------------------------------------------------------


def test_model_versions_do_not_mix(store: VectorStore) -> None:
    rng = np.random.default_rng(7)
    store.live().images.upsert([image(rng, "old")])
    store.live().sentences.upsert([sentence(rng, "old")])
    store.open("v2", DIM)
    assert store.live_version() == V1  # opening another version does not make it live
    assert (store.index("v2").images.count(), store.index("v2").sentences.count()) == (0, 0)
    assert store.index("v2").images.get(["img-old"]) == [None]
    assert store.index("v2").images.search(unit(rng, 3), 10) == []
    store.index("v2").images.upsert([image(rng, "new")])
    with pytest.raises(ValueError, match=r"(?s)(32.*64|64.*32)"):
        store.open(V1, DIM * 2)
    assert store.live().images.count() == 1  # the live version: v1
    assert [h.id for h in store.live().images.search(unit(rng, 3), 10)] == ["img-old"]
    assert store.live().images.get(["img-new"]) == [None]
    store.open("v3-wide", DIM * 2)  # another model may have another dimension
    store.index("v3-wide").images.upsert(
        [StoredImage("w", unit(rng, 2, DIM * 2), np.zeros((2, 4)))]
    )
    assert store.index("v3-wide").images.count() == 1
    with pytest.raises(StoreUnavailable, match="v9"):
        store.index("v9").images.count()
    assert store.versions() == ["v1", "v2", "v3-wide"]


def test_switch_live_moves_both_aliases_at_once(backend: Backend) -> None:
    rng = np.random.default_rng(17)
    store = backend.opened()
    store.open("v2", DIM)
    store.live().images.upsert([image(rng, "old")])
    store.live().sentences.upsert([sentence(rng, "old")])
    store.index("v2").images.upsert([image(rng, "new")])
    store.index("v2").sentences.upsert([sentence(rng, "new")])
    store.switch_live("v2")
    assert store.live_version() == store.live_version(fresh=True) == "v2"
    moved = store.switched_from(V1)
    assert moved is not None and moved.version == "v2" and store.switched_from("v2") is None
    assert [h.id for h in store.live().images.search(unit(rng, 3), 10)] == ["img-new"]
    assert [h.id for h in store.live().sentences.search(unit(rng, 3), 10)] == ["sen-new"]
    with pytest.raises(ValueError, match="live"):
        store.drop_version("v2")
    with pytest.raises(StoreUnavailable, match="not opened"):
        store.switch_live("v7")
    store.drop_version(V1)
    assert store.versions() == ["v2"]
    with pytest.raises(StoreUnavailable):
        store.index(V1).images.count()
    store.close()
    if backend.kind in PERSISTENT:  # the switch is durable
        again = backend.make()
        again.open("v2", DIM)
        assert again.live_version() == "v2" and again.live().images.count() == 1
        again.close()


def test_sources_round_trip_and_revisions(store: VectorStore) -> None:
    rng = np.random.default_rng(18)
    features = rng.standard_normal((3, 7)).astype(np.float32)
    boxes = rng.uniform(0, 1, (3, 4)).astype(np.float32)
    picture = bytes(range(256)) * 3
    store.put_sources(
        [
            Source("a", "image", "r1", image=picture, uri="u://a", payload={"k": 1}),
            Source("b", "image", "r2", features=features, boxes=boxes),
            Source("a", "sentence", "r3", text="a dog runs.", payload={"lang": "en"}),
        ]
    )
    a, b, missing = store.get_sources("image", ["a", "b", "zz"])
    assert missing is None and a is not None and b is not None
    assert (a.image, a.uri, a.payload, a.rev) == (picture, "u://a", {"k": 1}, "r1")
    assert b.image is None and b.features is not None and b.boxes is not None
    np.testing.assert_array_equal(b.features, features)
    np.testing.assert_allclose(b.boxes, boxes, atol=1e-7)
    (s,) = store.get_sources("sentence", ["a"])
    assert s is not None and (s.text, s.payload, s.rev) == ("a dog runs.", {"lang": "en"}, "r3")
    assert store.source_revisions("image") == {"a": "r1", "b": "r2"}
    assert store.source_revisions("sentence") == {"a": "r3"}
    assert (store.count_sources("image"), store.count_sources("sentence")) == (2, 1)

    store.live().images.upsert([StoredImage("a", unit(rng, 2), np.zeros((2, 4)), rev="r1")])
    assert store.index(V1).images.revisions() == {"a": "r1"}
    assert store.live().images.get(["a"])[0].rev == "r1"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="needs an image or features"):
        store.put_sources([Source("c", "image", "r")])
    with pytest.raises(ValueError, match="reserved"):
        store.put_sources([Source("c", "sentence", "r", text="x", payload={"_id": 1})])

    store.open("v2", DIM)
    store.index("v2").images.upsert([StoredImage("a", unit(rng, 2), np.zeros((2, 4)), rev="r1")])
    assert store.delete_everywhere("image", ["a", "b", "zz"]) == ["zz"]
    assert store.get_sources("image", ["a", "b"]) == [None, None]
    assert store.index(V1).images.count() == store.index("v2").images.count() == 0
    assert store.source_revisions("sentence") == {"a": "r3"}  # other kind untouched


def test_deletes_skip_a_version_another_process_dropped() -> None:
    """Two stores on one Qdrant (one client: one server) stand for two processes."""
    rng = np.random.default_rng(19)
    server = QdrantClient(":memory:")
    ranker, admin = QdrantStore(server), QdrantStore(server)
    for store in (ranker, admin):
        store.open(V1, DIM)
        store.open("v2", DIM)
    ranker.put_sources([Source("a", "sentence", "r1", text="x")])
    ranker.live().sentences.upsert([sentence(rng, "a")])
    admin.drop_version("v2")  # the ranker still lists v2 as opened
    assert ranker.delete_everywhere("sentence", ["a", "sen-a", "zz"]) == ["zz"]
    assert admin.live().sentences.count() == 0


def test_reopen_persists(persistent_backend: Backend) -> None:
    rng = np.random.default_rng(8)
    imgs = [image(rng, i, int(rng.integers(2, 10)), k=i) for i in range(20)]
    sens = [sentence(rng, i) for i in range(5)]
    s = persistent_backend.opened()
    s.live().images.upsert(imgs)
    s.live().sentences.upsert(sens)
    s.live().images.delete(["img-3"])
    s.close()

    with pytest.raises(ValueError, match=r"(?s)(32.*64|64.*32)"):
        persistent_backend.opened(V1, DIM * 2)
    s2 = persistent_backend.opened()
    try:
        assert (s2.live().images.count(), s2.live().sentences.count()) == (19, 5)
        got = s2.live().images.get([imgs[7].id, "img-3"])
        assert got[1] is None and got[0] is not None
        np.testing.assert_allclose(got[0].regions, imgs[7].regions, atol=1e-6, rtol=0)
        assert got[0].payload == {"k": 7}
        query = unit(rng, 12)
        kept = [x for x in imgs if x.id != "img-3"]
        assert_ranking(
            s2.live().images.search(query, 100, candidates=COVER),
            [x.id for x in kept],
            maxsim(query, [x.regions for x in kept]),
            100,
        )
    finally:
        s2.close()


def test_edge_folder_is_locked_while_open(tmp_path: Path) -> None:
    a = EdgeStore(tmp_path)
    a.open(V1, DIM)
    try:
        with pytest.raises(StoreError, match="already open"):
            EdgeStore(tmp_path).open(V1, DIM)
    finally:
        a.close()
    b = EdgeStore(tmp_path)
    b.open(V1, DIM)
    assert b.healthy()
    b.close()


def test_edge_concurrent_searches(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    s = EdgeStore(tmp_path, sync_writes=False)
    s.open(V1, DIM)
    imgs = [image(rng, i, 8) for i in range(100)]
    s.live().images.upsert(imgs)
    queries = [unit(rng, 12) for _ in range(8)]
    want = [s.live().images.search(q, 20) for q in queries]
    got: list[object] = [None] * len(queries)

    def work(i: int) -> None:
        got[i] = s.live().images.search(queries[i], 20)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(queries))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want
    s.close()


# -- unreachable server ------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("grpc", [False, True])
def test_unreachable_server_is_store_unavailable(grpc: bool) -> None:
    port = _closed_port()
    client = QdrantClient(
        url=f"http://127.0.0.1:{port}",
        grpc_port=port,
        prefer_grpc=grpc,
        timeout=2,
        check_compatibility=False,
    )
    s = QdrantStore(client)
    with pytest.raises(StoreUnavailable, match="unreachable"):
        s.open(V1, DIM)
    assert not s.healthy()


# -- crash durability --------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from qdrant_client import QdrantClient
    from services.store import StoredImage
    from services.store.edge import EdgeStore
    from services.store.qdrant import QdrantStore

    kind, root, dim = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kind == "qdrant-path":
        store = QdrantStore(QdrantClient(path=root))
    else:
        store = EdgeStore(root, sync_writes=(kind == "edge-sync"))
    store.open("v1", dim)
    v = np.load(root + ".npy")
    store.live().images.upsert([StoredImage("crash-me", v, np.ones((len(v), 4)), "u", {"k": "v"})])
    print("acked", flush=True)
    time.sleep(120)
    """
)


@pytest.mark.parametrize("kind", ["edge-sync", "edge-nosync", "qdrant-path"])
def test_acked_upsert_survives_sigkill(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "store"
    vecs = unit(np.random.default_rng(10), 7)
    np.save(str(root) + ".npy", vecs)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, kind, str(root), str(DIM)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 60)
        line = child.stdout.readline() if ready else ""
        assert line.strip() == "acked", child.stderr.read() if child.stderr else line
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    s: VectorStore = (
        QdrantStore(QdrantClient(path=str(root))) if kind == "qdrant-path" else EdgeStore(root)
    )
    s.open(V1, DIM)
    try:
        (got,) = s.live().images.get(["crash-me"])
        assert got is not None, f"{kind}: acknowledged upsert lost after SIGKILL"
        np.testing.assert_allclose(got.regions, vecs, atol=1e-6, rtol=0)
        assert got.payload == {"k": "v"} and s.live().images.count() == 1
    finally:
        s.close()


def test_point_ids_are_stable_uuid5() -> None:
    assert point_id("img-1") == point_id("img-1") != point_id("img-2")
    assert len(point_id("x" * 5000)) == 36
