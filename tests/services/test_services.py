"""The services end to end over real gRPC on 127.0.0.1, single-process mode (embedded store)."""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from services.config import load_settings
from services.convert import from_matrix, to_boxes, to_matrix
from services.main import RunningApp, start
from teran.alignment import alignment_scores
from teran_dev.launcher import ServerProcess
from teran_protos.v1 import common_pb2
from teran_protos.v1 import image_encoder_pb2 as ipb
from teran_protos.v1 import image_encoder_pb2_grpc as igrpc
from teran_protos.v1 import ranker_pb2 as rpb
from teran_protos.v1 import ranker_pb2_grpc as rgrpc
from teran_protos.v1 import text_encoder_pb2 as tpb
from teran_protos.v1 import text_encoder_pb2_grpc as tgrpc

N_IMAGES = 60


def _settings(checkpoint: Path, store: Path, **extra: Any) -> Any:
    return load_settings(
        None,
        common={"model": {"checkpoint": str(checkpoint)}, "store": {"path": str(store)}},
        server={"grpc_port": 0, "metrics_port": 0, "shutdown_grace_s": 1},
        **extra,
    )


@pytest.fixture(scope="module")
def server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    running = start(
        _settings(
            checkpoint,
            tmp_path_factory.mktemp("store"),
            image_encoder={"max_image_bytes": 200_000, "max_pixels": 4_000_000},
            ranker={"candidates": 100},
        )
    )
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def channel(server: RunningApp) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def _regions(i: int, dim: int = 320) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(i)
    n = int(gen.integers(3, 12))
    x1y1 = gen.uniform(0, 0.5, size=(n, 2))
    return gen.standard_normal((n, dim)).astype(np.float32), np.concatenate(
        [x1y1, x1y1 + gen.uniform(0.1, 0.5, size=(n, 2))], 1
    ).astype(np.float32)


def _region_msg(features: np.ndarray, boxes: np.ndarray) -> common_pb2.RegionFeatures:
    return common_pb2.RegionFeatures(features=to_matrix(features), boxes=to_boxes(boxes))


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def collection(channel: grpc.Channel) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    stub = igrpc.ImageEncoderStub(channel)
    data = {f"r{i:03d}": _regions(i) for i in range(N_IMAGES)}
    items = [
        ipb.IngestItem(id=k, regions=_region_msg(*v), payload=_payload(i))
        for i, (k, v) in enumerate(data.items())
    ]
    results = list(stub.Ingest(iter(items)))
    assert [r.id for r in results] == list(data)
    assert all(r.stored for r in results), [r.message for r in results if not r.stored]
    return data


def _payload(i: int) -> Any:
    from google.protobuf import struct_pb2

    s = struct_pb2.Struct()
    s.update({"parity": "even" if i % 2 == 0 else "odd", "bucket": i % 3})
    return s


def _exact_scores(
    checkpoint: Path, data: dict[str, tuple[np.ndarray, np.ndarray]], query: str
) -> dict[str, float]:
    """The core library's scores for the same inputs, with no service in between."""
    from teran.checkpoint import load_checkpoint

    model, tokenizer = load_checkpoint(checkpoint)
    tokens = tokenizer([query])
    out = {}
    with torch.no_grad():
        texts = model.encode_text(tokens.ids, tokens.lengths)
        for key, (features, boxes) in data.items():
            images = model.encode_image(
                torch.from_numpy(features)[None], torch.from_numpy(boxes)[None],
                torch.tensor([len(features)]),
            )  # fmt: skip
            out[key] = float(
                alignment_scores(images.regions, images.region_mask, texts.words, texts.word_mask)
            )
    return out


def test_ranker_scores_equal_core_scorer_and_exhaustive_top_k(
    channel: grpc.Channel, checkpoint: Path, collection: dict[str, Any]
) -> None:
    query = "a red circle to the left of a blue square."
    exact = _exact_scores(checkpoint, collection, query)
    response = rgrpc.RankerStub(channel).Search(rpb.SearchRequest(query=query, top_k=10))
    assert len(response.hits) == 10
    for hit in response.hits:
        assert hit.score == pytest.approx(exact[hit.id], abs=1e-4)
    best = sorted(exact, key=lambda k: -exact[k])[:10]
    # two-stage search with candidates (100) covering the collection (60) equals exhaustive MrSw
    assert [h.id for h in response.hits] == best


def test_search_pages_filters_and_explains(channel: grpc.Channel, collection: Any) -> None:
    stub = rgrpc.RankerStub(channel)
    query = "a small green square above a yellow triangle"
    full = stub.Search(rpb.SearchRequest(query=query, top_k=8))
    page = stub.Search(rpb.SearchRequest(query=query, top_k=4, offset=4))
    assert [h.id for h in page.hits] == [h.id for h in full.hits[4:8]]
    even = rpb.Filter(must=[rpb.Condition(key="parity", equals=_value("even"))])
    filtered = stub.Search(rpb.SearchRequest(query=query, top_k=5, filter=even, explain=True))
    assert filtered.hits and all(h.payload["parity"] == "even" for h in filtered.hits)
    words = list(filtered.words)
    assert words[-1] == "triangle"  # a full stop is added, so the last word is aligned
    for hit in filtered.hits:
        assert [a.word for a in hit.alignment] == words
        assert sum(a.similarity for a in hit.alignment) == pytest.approx(hit.score, abs=1e-4)
        for a in hit.alignment:
            assert 0 <= a.box.x1 < a.box.x2 <= 1 and 0 <= a.box.y1 < a.box.y2 <= 1


def _value(v: Any) -> Any:
    from google.protobuf import struct_pb2

    out = struct_pb2.Value()
    if isinstance(v, str):
        out.string_value = v
    else:
        out.number_value = v
    return out


def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_bad_requests_get_status_and_field(channel: grpc.Channel, collection: Any) -> None:
    ranker = rgrpc.RankerStub(channel)
    text = tgrpc.TextEncoderStub(channel)
    image = igrpc.ImageEncoderStub(channel)
    features, boxes = _regions(1)
    cases = [
        (lambda: ranker.Search(rpb.SearchRequest(query="dog", top_k=101)),
         grpc.StatusCode.INVALID_ARGUMENT, "top_k"),
        (lambda: ranker.Search(rpb.SearchRequest(query="dog", offset=5000)),
         grpc.StatusCode.INVALID_ARGUMENT, "offset"),
        (lambda: ranker.Search(rpb.SearchRequest(query="   ")),
         grpc.StatusCode.INVALID_ARGUMENT, "query"),
        (lambda: ranker.Search(rpb.SearchRequest(query=" ".join(["dog"] * 200))),
         grpc.StatusCode.INVALID_ARGUMENT, "query"),
        (lambda: ranker.Search(rpb.SearchRequest(
            query="dog", filter=rpb.Filter(must=[rpb.Condition(key="", equals=_value(1))]))),
         grpc.StatusCode.INVALID_ARGUMENT, "filter.must[0].key"),
        (lambda: ranker.Search(rpb.SearchRequest(
            query="dog", filter=rpb.Filter(must=[rpb.Condition(key="parity")]))),
         grpc.StatusCode.INVALID_ARGUMENT, "filter.must[0]"),
        (lambda: ranker.SearchSentences(rpb.SearchSentencesRequest(image_id="nope")),
         grpc.StatusCode.NOT_FOUND, "image_id"),
        (lambda: ranker.SearchSentences(rpb.SearchSentencesRequest()),
         grpc.StatusCode.INVALID_ARGUMENT, "query"),
        (lambda: ranker.IngestSentences(rpb.IngestSentencesRequest()),
         grpc.StatusCode.INVALID_ARGUMENT, "sentences"),
        (lambda: ranker.Delete(rpb.DeleteRequest()),
         grpc.StatusCode.INVALID_ARGUMENT, "image_ids"),
        (lambda: text.EncodeText(tpb.EncodeTextRequest(sentences=["fine", ""])),
         grpc.StatusCode.INVALID_ARGUMENT, "sentences[1]"),
        (lambda: text.EncodeText(tpb.EncodeTextRequest(sentences=["a"] * 65)),
         grpc.StatusCode.INVALID_ARGUMENT, "sentences"),
        (lambda: text.EncodeText(tpb.EncodeTextRequest()),
         grpc.StatusCode.INVALID_ARGUMENT, "sentences"),
        (lambda: image.EncodeImage(ipb.EncodeImageRequest(image=b"")),
         grpc.StatusCode.INVALID_ARGUMENT, "request.image"),
        (lambda: image.EncodeImage(ipb.EncodeImageRequest(image=b"x" * 300_000)),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "request.image"),
        (lambda: image.EncodeImage(ipb.EncodeImageRequest(image=b"\x89PNG garbage")),
         grpc.StatusCode.INVALID_ARGUMENT, "request.image"),
        (lambda: image.EncodeImage(ipb.EncodeImageRequest(regions=_region_msg(
            features[:, :100], boxes))),
         grpc.StatusCode.INVALID_ARGUMENT, "request.regions.features"),
        (lambda: image.EncodeImage(ipb.EncodeImageRequest(regions=_region_msg(
            features, boxes[:2]))),
         grpc.StatusCode.INVALID_ARGUMENT, "request.regions.boxes"),
        (lambda: image.EncodeImage(ipb.EncodeImageRequest()),
         grpc.StatusCode.INVALID_ARGUMENT, "request"),
    ]  # fmt: skip
    for call, code, field in cases:
        got, details = _code(call)
        assert got == code, (field, got, details)
        assert details.startswith(field), (field, details)
    # a bad sentence fails alone, in its own result (the call succeeds)
    reply = ranker.IngestSentences(
        rpb.IngestSentencesRequest(sentences=[rpb.Sentence(id="s", text="")])
    )
    assert reply.stored == 0 and not reply.results[0].stored
    assert reply.results[0].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert reply.results[0].message.startswith("sentences[0].text"), reply.results[0].message


def test_bad_ingest_items_fail_alone(channel: grpc.Channel, collection: Any) -> None:
    stub = igrpc.ImageEncoderStub(channel)
    features, boxes = _regions(2)
    nan = features.copy()
    nan[0, 0] = np.nan
    bomb = io.BytesIO()
    Image.new("1", (5000, 5000)).save(bomb, "PNG")  # 25 megapixels in a few kilobytes
    reserved = _payload(0)
    reserved.update({"_id": "x"})
    flipped = boxes.copy()
    flipped[0, [0, 2]] = flipped[0, [2, 0]]
    items = [
        ipb.IngestItem(id="ok-1", image=_png((200, 20, 20))),
        ipb.IngestItem(id="empty", image=b""),
        ipb.IngestItem(id="garbage", image=b"GIF89a nothing"),
        ipb.IngestItem(id="bomb", image=bomb.getvalue()),
        ipb.IngestItem(id="nan", regions=_region_msg(nan, boxes)),
        ipb.IngestItem(id="box", regions=_region_msg(features, flipped)),
        ipb.IngestItem(id="reserved", image=_png((1, 2, 3)), payload=reserved),
        ipb.IngestItem(id="", image=_png((1, 2, 3))),
        ipb.IngestItem(id="nothing"),
        ipb.IngestItem(id="ok-2", regions=_region_msg(features, boxes)),
    ]
    results = list(stub.Ingest(iter(items)))
    assert [r.id for r in results] == [i.id for i in items]
    by_id = {r.id: r for r in results}
    assert by_id["ok-1"].stored and by_id["ok-1"].regions == 49
    assert by_id["ok-2"].stored and by_id["ok-2"].regions == len(features)
    expected = {
        "empty": (grpc.StatusCode.INVALID_ARGUMENT, "items[1].image"),
        "garbage": (grpc.StatusCode.INVALID_ARGUMENT, "items[2].image"),
        "bomb": (grpc.StatusCode.RESOURCE_EXHAUSTED, "items[3].image"),
        "nan": (grpc.StatusCode.INVALID_ARGUMENT, "items[4].regions.features"),
        "box": (grpc.StatusCode.INVALID_ARGUMENT, "items[5].regions.boxes[0]"),
        "reserved": (grpc.StatusCode.INVALID_ARGUMENT, "items[6].payload"),
        "": (grpc.StatusCode.INVALID_ARGUMENT, "items[7].id"),
        "nothing": (grpc.StatusCode.INVALID_ARGUMENT, "items[8]"),
    }
    for key, (code, field) in expected.items():
        result = by_id[key]
        assert not result.stored
        assert result.code == code.value[0], (key, result.message)
        assert result.message.startswith(field), (key, result.message)
    stored = rgrpc.RankerStub(channel).Delete(
        rpb.DeleteRequest(image_ids=["ok-1", "ok-2", "empty", "nan"])
    )
    assert stored.deleted == 2
    assert sorted(stored.not_found) == ["empty", "nan"]


def test_reingest_overwrites_and_sentences_round_trip(
    channel: grpc.Channel, collection: Any
) -> None:
    ranker = rgrpc.RankerStub(channel)
    before = ranker.Stats(rpb.StatsRequest())
    features, boxes = _regions(99)
    stub = igrpc.ImageEncoderStub(channel)
    for _ in range(2):
        results = list(
            stub.Ingest(iter([ipb.IngestItem(id="r000", regions=_region_msg(features, boxes))]))
        )
        assert results[0].stored
    after = ranker.Stats(rpb.StatsRequest())
    assert after.images == before.images
    assert after.image_collection.endswith(after.model_version)
    stored = ranker.IngestSentences(
        rpb.IngestSentencesRequest(
            sentences=[
                rpb.Sentence(id="s1", text="a red circle left of a blue square"),
                rpb.Sentence(id="s2", text="two dogs run on a beach."),
            ]
        )
    )
    assert stored.stored == 2
    hits = ranker.SearchSentences(rpb.SearchSentencesRequest(image_id="r000", top_k=2)).hits
    assert sorted(h.id for h in hits) == ["s1", "s2"]
    encoded = igrpc.ImageEncoderStub(channel).EncodeImage(
        ipb.EncodeImageRequest(regions=_region_msg(features, boxes))
    )
    regions = from_matrix(encoded.regions, "regions")
    assert regions.shape == (len(features), 256)
    assert np.allclose(np.linalg.norm(regions, axis=1), 1, atol=1e-4)
    by_bytes = ranker.SearchSentences(
        rpb.SearchSentencesRequest(regions=_region_msg(features, boxes), top_k=2)
    ).hits
    assert [(h.id, round(h.score, 4)) for h in by_bytes] == [
        (h.id, round(h.score, 4)) for h in hits
    ]


def test_health_and_reflection(server: RunningApp, channel: grpc.Channel) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "teran.v1.Ranker", "teran.v1.ImageEncoder", "teran.v1.TextEncoder"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.SERVING, service
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"teran.v1.Ranker", "teran.v1.ImageEncoder", "teran.v1.TextEncoder"} <= names


def test_metrics_endpoint_counts_rpcs(server: RunningApp, channel: grpc.Channel) -> None:
    import urllib.request

    rgrpc.RankerStub(channel).Stats(rpb.StatsRequest())
    with pytest.raises(grpc.RpcError):
        rgrpc.RankerStub(channel).Search(rpb.SearchRequest(query="dog", top_k=999))
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics").read().decode()
    assert 'teran_rpc_requests_total{code="OK",method="Stats"}' in text
    assert 'teran_rpc_requests_total{code="INVALID_ARGUMENT",method="Search"}' in text
    assert "teran_rpc_latency_seconds_bucket" in text
    assert "teran_model_batch_size_bucket" in text
    assert "teran_dependency_latency_seconds_bucket" in text


def test_acked_items_survive_kill_9(checkpoint: Path, tmp_path: Path) -> None:
    """Single-process server in a subprocess: every acked item is there after SIGKILL."""
    config = tmp_path / "config.yaml"
    config.write_text(
        f"target: all\nserver: {{grpc_port: 0, metrics_port: null}}\n"
        f"common:\n  model: {{checkpoint: {checkpoint}}}\n  store: {{path: {tmp_path / 'store'}}}\n"
    )

    def launch() -> tuple[ServerProcess, str]:
        process = ServerProcess(config, tmp_path / "server.log")
        return process, process.wait_ready(120)

    proc, address = launch()
    acked = []
    with grpc.insecure_channel(address) as ch:
        stub = igrpc.ImageEncoderStub(ch)
        items = (ipb.IngestItem(id=f"k{i}", regions=_region_msg(*_regions(i))) for i in range(40))
        for result in stub.Ingest(items):
            assert result.stored
            acked.append(result.id)
            if len(acked) == 25:
                os.kill(proc.proc.pid, signal.SIGKILL)
                break
    proc.proc.wait(30)
    proc.stop()
    proc, address = launch()
    try:
        with grpc.insecure_channel(address) as ch:
            stats = rgrpc.RankerStub(ch).Stats(rpb.StatsRequest())
            assert stats.images >= len(acked) == 25
            hits = rgrpc.RankerStub(ch).Search(rpb.SearchRequest(query="a dog.", top_k=100)).hits
            assert set(acked) <= {h.id for h in hits}
    finally:
        assert proc.stop(30) == 0  # SIGTERM: a graceful exit


def test_ranker_sentence_mrsw_equals_the_core_scorer() -> None:
    """SearchSentences re-scores its candidates in numpy: the same MrSw as `teran.alignment`."""
    from services.ranker.search import mrsw

    gen = np.random.default_rng(5)

    def unit(n: int) -> np.ndarray:
        x = gen.standard_normal((n, 32)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    regions = unit(49)
    sentences = [unit(int(n)) for n in gen.integers(1, 15, size=20)]
    words = torch.zeros(len(sentences), 14, 32)
    mask = torch.zeros(len(sentences), 14, dtype=torch.bool)
    for i, s in enumerate(sentences):
        words[i, : len(s)] = torch.from_numpy(s)
        mask[i, : len(s)] = True
    core = alignment_scores(
        torch.from_numpy(regions)[None], torch.ones(1, 49, dtype=torch.bool), words, mask, "MrSw"
    )[0]
    np.testing.assert_allclose(mrsw(regions, sentences), core.numpy(), atol=1e-5)
    assert mrsw(regions, []).shape == (0,)
