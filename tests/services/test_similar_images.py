"""Ranker.SearchSimilarImages over real gRPC on 127.0.0.1 (single process, embedded store): an
image finds itself first, a stored image_id is left out of its own hits, the order and scores
are the region-to-region MrSw computed in numpy from the stored regions (two-stage and exact
layouts), paging and filters as Search, and bad inputs are refused like SearchSentences."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2
from prometheus_client import REGISTRY

from services.config import load_settings
from services.convert import from_matrix
from services.main import RunningApp, start
from services.security.auth import METHOD_ROLES
from services.security.keys import Role
from teran.data.synthetic import SyntheticScenes
from teran_dev.demo_data import png_bytes
from teran_protos.v1 import common_pb2
from teran_protos.v1 import image_encoder_pb2 as ipb
from teran_protos.v1 import image_encoder_pb2_grpc as igrpc
from teran_protos.v1 import ranker_pb2 as rpb
from teran_protos.v1 import ranker_pb2_grpc as rgrpc
from tests.messages import region_features

N_REGIONS = 24
"""Images stored as random region features (r00..r23)."""
N_PICTURES = 4
"""Synthetic scenes stored as pictures (p0..p3)."""
TIES = ("tie/b", "tie/a")
"""Copies of r05's stored point under other ids: equal scores for every query."""
INVALID = grpc.StatusCode.INVALID_ARGUMENT
MAX_IMAGE_BYTES = 200_000


def _settings(checkpoint: Path, store: Path, search: str = "two_stage") -> Any:
    return load_settings(
        None,
        common={
            "model": {"checkpoint": str(checkpoint)},
            "store": {"path": str(store), "search": search},
        },
        server={"grpc_port": 0, "metrics_port": None, "shutdown_grace_s": 1},
        image_encoder={"max_image_bytes": MAX_IMAGE_BYTES},
        ranker={"candidates": 100},
    )


def _fill(running: RunningApp) -> dict[str, bytes]:
    """The collection: region features with a parity payload, pictures, and the tie copies;
    returns the pictures by id."""
    scenes = SyntheticScenes(N_PICTURES, split="test", seed=7)
    pictures = {f"p{i}": png_bytes(scenes.image(i)) for i in range(N_PICTURES)}
    items = [
        ipb.IngestItem(id=f"r{i:02d}", regions=region_features(i), payload=_parity(i))
        for i in range(N_REGIONS)
    ]
    items += [
        ipb.IngestItem(id=k, image=v, payload=_parity(i))
        for i, (k, v) in enumerate(pictures.items())
    ]
    with grpc.insecure_channel(running.address) as channel:
        results = list(igrpc.ImageEncoderStub(channel).Ingest(iter(items)))
    assert all(r.stored for r in results), [r.message for r in results if not r.stored]
    images = running.app.components["store"].live().images
    [original] = images.get(["r05"])
    images.upsert([dataclasses.replace(original, id=tie) for tie in TIES])
    return pictures


def _parity(i: int) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update({"parity": "even" if i % 2 == 0 else "odd"})
    return out


@pytest.fixture(scope="module")
def server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    running = start(_settings(checkpoint, tmp_path_factory.mktemp("store")))
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def pictures(server: RunningApp) -> dict[str, bytes]:
    return _fill(server)


@pytest.fixture(scope="module")
def ranker(server: RunningApp) -> Iterator[rgrpc.RankerStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield rgrpc.RankerStub(channel)


def _stored(server: RunningApp) -> dict[str, np.ndarray]:
    """Every stored image's region vectors, read from the live index."""
    images = server.app.components["store"].live().images
    ids = list(images.revisions())
    return {i: image.regions for i, image in zip(ids, images.get(ids), strict=True)}


def _mrsw(query: np.ndarray, stored: dict[str, np.ndarray], exclude: str = "") -> list[Any]:
    """(id, score) best first, equal scores by id: for every query region its best stored
    region (cosine: the vectors are unit), summed."""
    scores = {k: float((query @ v.T).max(axis=1).sum()) for k, v in stored.items() if k != exclude}
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def _all_hits(ranker: rgrpc.RankerStub, **query: Any) -> list[tuple[str, float]]:
    """Every hit, page by page (top_k 10), so paging is exercised too."""
    out: list[tuple[str, float]] = []
    while True:
        request = rpb.SearchSimilarImagesRequest(top_k=10, offset=len(out), **query)
        page = ranker.SearchSimilarImages(request).hits
        out += [(h.id, h.score) for h in page]
        if len(page) < 10:
            return out


def _check_against_numpy(server: RunningApp, ranker: rgrpc.RankerStub) -> None:
    stored = _stored(server)
    assert len(stored) == N_REGIONS + N_PICTURES + len(TIES)
    for image_id in ("r00", "r05", "r13", "p1"):
        expected = _mrsw(stored[image_id], stored, exclude=image_id)
        got = _all_hits(ranker, image_id=image_id)
        assert [k for k, _ in got] == [k for k, _ in expected], image_id
        assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-4)


def test_an_image_finds_itself_first_by_its_regions_and_its_bytes(
    server: RunningApp, ranker: rgrpc.RankerStub, pictures: dict[str, bytes]
) -> None:
    for i in (0, 7, 16):
        regions = region_features(i)
        response = ranker.SearchSimilarImages(
            rpb.SearchSimilarImagesRequest(regions=regions, top_k=3)
        )
        assert response.hits[0].id == f"r{i:02d}"
        # each query region's best is itself (cosine 1): the score is the region count
        assert response.hits[0].score == pytest.approx(regions.features.rows, abs=1e-3)
        assert response.hits[1].score < response.hits[0].score - 1e-3
        assert not response.words and not response.hits[0].alignment
        assert response.model_version == server.app.components["store"].live_version()
    for image_id, data in pictures.items():
        hits = ranker.SearchSimilarImages(rpb.SearchSimilarImagesRequest(image=data, top_k=2)).hits
        assert hits[0].id == image_id
        assert hits[0].payload["parity"] in ("even", "odd") and hits[0].uri == ""


def test_a_stored_image_id_is_left_out_of_its_own_hits(
    ranker: rgrpc.RankerStub, pictures: dict[str, bytes]
) -> None:
    by_regions = ranker.SearchSimilarImages(
        rpb.SearchSimilarImagesRequest(regions=region_features(3), top_k=6)
    ).hits
    by_id = ranker.SearchSimilarImages(rpb.SearchSimilarImagesRequest(image_id="r03", top_k=5)).hits
    assert by_regions[0].id == "r03" and "r03" not in {h.id for h in by_id}
    assert [h.id for h in by_id] == [h.id for h in by_regions[1:]]
    assert [h.score for h in by_id] == pytest.approx([h.score for h in by_regions[1:]], abs=1e-4)
    # r05's copies score like r05 itself for its own query: first, in id order, then the rest
    ties = ranker.SearchSimilarImages(rpb.SearchSimilarImagesRequest(image_id="r05", top_k=3))
    assert [h.id for h in ties.hits[:2]] == sorted(TIES)
    assert ties.hits[0].score == ties.hits[1].score > ties.hits[2].score
    for image_id in pictures:
        hits = _all_hits(ranker, image_id=image_id)
        assert image_id not in {k for k, _ in hits}
        assert len(hits) == N_REGIONS + N_PICTURES + len(TIES) - 1


def test_order_and_scores_are_region_mrsw_over_the_stored_regions(
    server: RunningApp, ranker: rgrpc.RankerStub, pictures: dict[str, bytes]
) -> None:
    _check_against_numpy(server, ranker)
    # a picture as the query: its regions as the ImageEncoder gives them
    with grpc.insecure_channel(server.address) as channel:
        encoded = igrpc.ImageEncoderStub(channel).EncodeImage(
            ipb.EncodeImageRequest(image=pictures["p2"])
        )
    query = from_matrix(encoded.regions, "regions")
    expected = _mrsw(query, _stored(server))
    got = _all_hits(ranker, image=pictures["p2"])
    assert [k for k, _ in got] == [k for k, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-4)


def test_the_exact_layout_gives_the_same_region_mrsw(checkpoint: Path, tmp_path: Path) -> None:
    exact = start(_settings(checkpoint, tmp_path / "store", search="exact"))
    try:
        _fill(exact)
        with grpc.insecure_channel(exact.address) as channel:
            _check_against_numpy(exact, rgrpc.RankerStub(channel))
    finally:
        exact.stop(0)


def test_pages_and_filters(ranker: rgrpc.RankerStub, pictures: dict[str, bytes]) -> None:
    full = ranker.SearchSimilarImages(rpb.SearchSimilarImagesRequest(image_id="r10", top_k=12))
    assert len(full.hits) == 12
    pages = [
        ranker.SearchSimilarImages(
            rpb.SearchSimilarImagesRequest(image_id="r10", top_k=4, offset=offset)
        ).hits
        for offset in (0, 4, 8)
    ]
    assert [h.id for page in pages for h in page] == [h.id for h in full.hits]
    even = rpb.Filter(
        must=[rpb.Condition(key="parity", equals=struct_pb2.Value(string_value="even"))]
    )
    filtered = ranker.SearchSimilarImages(
        rpb.SearchSimilarImagesRequest(regions=region_features(1), top_k=100, filter=even)
    ).hits
    assert filtered and all(h.payload["parity"] == "even" for h in filtered)
    assert "r01" not in {h.id for h in filtered}  # odd
    unfiltered = ranker.SearchSimilarImages(
        rpb.SearchSimilarImagesRequest(regions=region_features(1), top_k=100)
    ).hits
    assert [h.id for h in filtered] == [h.id for h in unfiltered if h.payload["parity"] == "even"]


def _error(method: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        method(request)
    return info.value.code(), info.value.details() or ""


def test_bad_inputs_are_refused_like_search_sentences(
    ranker: rgrpc.RankerStub, pictures: dict[str, bytes]
) -> None:
    features = region_features(2)
    narrow = common_pb2.RegionFeatures(
        features=common_pb2.Matrix(rows=2, cols=100, data=b"\0" * 800), boxes=features.boxes[:2]
    )
    short = common_pb2.RegionFeatures(features=features.features, boxes=features.boxes[:1])
    nan = common_pb2.RegionFeatures(
        features=common_pb2.Matrix(rows=1, cols=320, data=b"\xff" * 1280), boxes=features.boxes[:1]
    )
    condition = rpb.Condition(key="parity")
    cases: list[tuple[dict[str, Any], grpc.StatusCode, str]] = [
        ({}, INVALID, "query"),
        ({"image_id": "r01", "top_k": 101}, INVALID, "top_k"),
        ({"image_id": "r01", "offset": 5000}, INVALID, "offset"),
        ({"image_id": ""}, INVALID, "image_id"),
        ({"image_id": "a\x00b"}, INVALID, "image_id"),
        ({"image_id": "x" * 300}, INVALID, "image_id"),
        ({"image_id": "nope"}, grpc.StatusCode.NOT_FOUND, "image_id"),
        ({"image": b""}, INVALID, "query.image"),
        ({"image": b"GIF89a nothing"}, INVALID, "query.image"),
        ({"image": b"x" * (MAX_IMAGE_BYTES + 1)}, grpc.StatusCode.RESOURCE_EXHAUSTED,
         "query.image"),
        ({"regions": narrow}, INVALID, "query.regions.features"),
        ({"regions": short}, INVALID, "query.regions.boxes"),
        ({"regions": nan}, INVALID, "query.regions.features"),
        ({"image_id": "r01", "filter": rpb.Filter(must=[condition])}, INVALID, "filter.must[0]"),
        ({"image_id": "r01", "filter": rpb.Filter(must=[rpb.Condition(key="")])}, INVALID,
         "filter.must[0].key"),
    ]  # fmt: skip
    for fields, code, field in cases:
        got = _error(ranker.SearchSimilarImages, rpb.SearchSimilarImagesRequest(**fields))
        assert got[0] == code and got[1].startswith(field), (field, got)
        same = _error(ranker.SearchSentences, rpb.SearchSentencesRequest(**fields))
        assert same == got, (field, same, got)


def test_the_search_role_calls_it_and_it_is_counted(
    ranker: rgrpc.RankerStub, pictures: dict[str, bytes]
) -> None:
    assert METHOD_ROLES["/teran.v1.Ranker/SearchSimilarImages"] is Role.SEARCH
    for method in rpb.DESCRIPTOR.services_by_name["Ranker"].methods:
        assert f"/teran.v1.Ranker/{method.name}" in METHOD_ROLES, method.name

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    ok = {"method": "SearchSimilarImages", "code": "OK"}
    searched = {"dependency": "store", "operation": "search_similar_images"}
    before = sample("teran_rpc_requests_total", **ok)
    store_before = sample("teran_dependency_latency_seconds_count", **searched)
    ranker.SearchSimilarImages(rpb.SearchSimilarImagesRequest(image_id="r01"))
    deadline = time.monotonic() + 10  # counted as the call ends, on the server's thread
    while sample("teran_rpc_requests_total", **ok) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sample("teran_rpc_requests_total", **ok) == before + 1
    assert sample("teran_dependency_latency_seconds_count", **searched) == store_before + 1
