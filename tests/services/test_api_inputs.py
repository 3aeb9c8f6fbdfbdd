"""Hostile and unlucky inputs at the public API, over real gRPC on 127.0.0.1 (single process):
each bad item fails alone with its own code and field, nothing it carried is stored, limits are
checked before the expensive work, and work stops once the caller is gone."""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2
from PIL import Image
from prometheus_client import REGISTRY

from services.config import load_settings
from services.convert import to_boxes, to_matrix
from services.main import RunningApp, start
from teran_protos.v1 import admin_pb2 as apb
from teran_protos.v1 import admin_pb2_grpc as agrpc
from teran_protos.v1 import common_pb2
from teran_protos.v1 import image_encoder_pb2 as ipb
from teran_protos.v1 import image_encoder_pb2_grpc as igrpc
from teran_protos.v1 import ranker_pb2 as rpb
from teran_protos.v1 import ranker_pb2_grpc as rgrpc
from teran_protos.v1 import text_encoder_pb2 as tpb
from teran_protos.v1 import text_encoder_pb2_grpc as tgrpc

INVALID = grpc.StatusCode.INVALID_ARGUMENT
MAX_PIXELS = 1_000_000
LIMITS = {
    "image_encoder": {
        "max_image_bytes": 200_000,
        "max_pixels": MAX_PIXELS,
        "max_chunk_pixels": 2 * MAX_PIXELS,
        "max_payload_bytes": 1024,
        "max_uri_chars": 64,
    },
    "text_encoder": {"max_sentence_chars": 256},
    "ranker": {"max_query_chars": 200, "max_payload_bytes": 1024},
}


def _settings(
    checkpoint: Path, store: Path, inference: dict[str, Any] | None = None, **extra: Any
) -> Any:
    return load_settings(
        None,
        common={
            "model": {"checkpoint": str(checkpoint)},
            "store": {"path": str(store)},
            "inference": inference or {},
        },
        server={"grpc_port": 0, "metrics_port": None, "shutdown_grace_s": 1},
        **extra,
    )


@pytest.fixture(scope="module")
def server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    running = start(_settings(checkpoint, tmp_path_factory.mktemp("store"), **LIMITS))
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def channel(server: RunningApp) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def _regions(seed: int) -> common_pb2.RegionFeatures:
    gen = np.random.default_rng(seed)
    n = int(gen.integers(3, 8))
    x1y1 = gen.uniform(0, 0.5, size=(n, 2))
    boxes = np.concatenate([x1y1, x1y1 + gen.uniform(0.1, 0.5, size=(n, 2))], 1)
    return common_pb2.RegionFeatures(
        features=to_matrix(gen.standard_normal((n, 320)).astype(np.float32)),
        boxes=to_boxes(boxes.astype(np.float32)),
    )


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def _png(size: tuple[int, int], colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels in a few bytes (the header is all that is
    read before the size is checked)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _items(kind: str, outcome: str, code: str) -> float:
    labels = {"kind": kind, "outcome": outcome, "code": code}
    return _sample("teran_ingested_items_total", labels)


def _calls(dependency: str, operation: str) -> float:
    labels = {"dependency": dependency, "operation": operation}
    return _sample("teran_dependency_latency_seconds_count", labels)


def _error(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details() or ""


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


def test_bad_items_fail_alone_and_leave_nothing(server: RunningApp, channel: grpc.Channel) -> None:
    bad_payloads: dict[str, tuple[dict[str, Any], str]] = {
        "empty-key": ({"": 1}, "items[1].payload"),
        "nan": ({"x": float("nan")}, "items[2].payload.x"),
        "inf": ({"x": [1, float("inf")]}, "items[3].payload.x[1]"),
        "deep": (_deep(9), "items[4].payload"),
        "long-key": ({"k" * 300: 1}, "items[5].payload"),
        "bell-key": ({"a\x07": 1}, "items[6].payload"),
        "big": ({"blob": "x" * 300_000}, "items[7].payload"),
    }
    items = [ipb.IngestItem(id="ok-a", regions=_regions(1), payload=_struct(_deep(8)))]
    items += [
        ipb.IngestItem(id=k, regions=_regions(2), payload=_struct(p))
        for k, (p, _) in bad_payloads.items()
    ]
    items += [
        ipb.IngestItem(id="line\nbreak", regions=_regions(3)),
        ipb.IngestItem(id="long-uri", regions=_regions(3), uri="http://x/" + "u" * 64),
        ipb.IngestItem(id="garbage", image=b"GIF89a nothing"),
        ipb.IngestItem(id="ok-b", regions=_regions(4), uri="http://x/b"),
    ]
    failed_before = _items("image", "failed", "INVALID_ARGUMENT")
    results = list(igrpc.ImageEncoderStub(channel).Ingest(iter(items)))
    assert [r.id for r in results] == [i.id for i in items]
    by_id = {r.id: r for r in results}
    assert by_id["ok-a"].stored and by_id["ok-b"].stored, results
    expected = {k: field for k, (_, field) in bad_payloads.items()}
    expected |= {"line\nbreak": "items[8].id", "long-uri": "items[9].uri"}
    expected |= {"garbage": "items[10].image"}
    for key, field in expected.items():
        r = by_id[key]
        assert not r.stored and r.code == INVALID.value[0], (key, r.code, r.message)
        assert r.message.startswith(field), (key, r.message)
        assert " at 0x" not in r.message, r.message
    assert _items("image", "failed", "INVALID_ARGUMENT") - failed_before == len(expected)
    store = server.app.components["store"]
    assert store.get_sources("image", list(expected)) == [None] * len(expected)
    assert store.live().images.get(list(expected), vectors=False) == [None] * len(expected)


def test_an_id_twice_in_one_chunk_stores_the_later(
    server: RunningApp, channel: grpc.Channel
) -> None:
    servicer = server.app.components["image_encoder"]
    store = server.app.components["store"]
    first, later = _regions(10), _regions(11)
    chunk = [
        ipb.IngestItem(id="dup", regions=first, payload=_struct({"try": 1})),
        ipb.IngestItem(id="dup", regions=later, payload=_struct({"try": 2})),
        ipb.IngestItem(id="dup-bad", regions=first, payload=_struct({"": 1})),
    ]
    results = servicer._ingest_chunk(chunk, 0)  # exactly one chunk, whatever the timing
    assert [(r.id, r.stored) for r in results] == [("dup", True), ("dup", True), ("dup-bad", False)]
    assert results[0].regions == results[1].regions == later.features.rows
    stored = store.live().images.get(["dup"])[0]
    assert stored.payload == {"try": 2.0} and len(stored.regions) == later.features.rows
    assert store.get_sources("image", ["dup-bad"]) == [None]

    # the same over the stream: a retry right behind the first try, both acked
    stream = [ipb.IngestItem(id="dup2", regions=r) for r in (first, later, first, later)]
    results = list(igrpc.ImageEncoderStub(channel).Ingest(iter(stream)))
    assert [r.stored for r in results] == [True] * 4, [r.message for r in results]
    source = store.get_sources("image", ["dup2"])[0]
    assert source is not None and len(source.features) == later.features.rows

    # a caller gone before encoding: nothing of the chunk is written
    assert (
        servicer._ingest_chunk([ipb.IngestItem(id="gone", regions=first)], 0, lambda: False) == []
    )
    assert store.get_sources("image", ["gone"]) == [None]


def test_chunks_stop_growing_at_the_pixel_budget() -> None:
    from services.image_encoder.service import gather

    costs = iter([30, 30, 50, 10, 0, 100, 0])

    def poll() -> int | None:
        return next(costs, None)

    def cost(c: int) -> int:
        return c

    assert gather(40, poll, cost, 16, 100) == ([40, 30, 30], 50)  # 50 more passes 100: it waits
    assert gather(50, poll, cost, 16, 100) == ([50, 10, 0], 100)
    assert gather(100, poll, cost, 16, 100) == ([100, 0], None)  # the first always goes
    costs = iter([0] * 10)
    chunk, held = gather(0, poll, cost, 4, 100)
    assert (len(chunk), held) == (4, None)  # at most max_items, the rest stay in the inbox


def test_ingest_in_pixel_budgeted_chunks_stores_everything(
    server: RunningApp, channel: grpc.Channel
) -> None:
    """1-megapixel pictures with a 2-megapixel budget: at most 2 decoded per model call."""
    picture = _png((1000, 1000))
    items = [ipb.IngestItem(id=f"px{i}", image=picture) for i in range(7)]
    items.insert(3, ipb.IngestItem(id="px-regions", regions=_regions(5)))
    bucket = {"model": "pixels", "le": "2.0"}
    calls = _sample("teran_model_batch_size_count", {"model": "pixels"})
    small = _sample("teran_model_batch_size_bucket", bucket)
    results = list(igrpc.ImageEncoderStub(channel).Ingest(iter(items)))
    assert all(r.stored for r in results) and len(results) == 8, [r.message for r in results]
    made = _sample("teran_model_batch_size_count", {"model": "pixels"}) - calls
    assert made >= 4  # 7 pictures, 2 at most per call
    assert _sample("teran_model_batch_size_bucket", bucket) - small == made
    assert server.app.components["images"].pixels(picture) == MAX_PIXELS
    assert server.app.components["images"].pixels(_png_header(2000, 2000)) == 0  # refused


def test_sentences_are_checked_before_writing_and_fail_alone(
    server: RunningApp, channel: grpc.Channel
) -> None:
    ranker = rgrpc.RankerStub(channel)
    sentences = [
        rpb.Sentence(id="s-ok-1", text="a red circle left of a blue square"),
        rpb.Sentence(id="s-tokens", text=" ".join(["a"] * 70)),
        rpb.Sentence(id="s-chars", text="x" * 300),
        rpb.Sentence(id="s-big", text="a dog.", payload=_struct({"b": "x" * 2000})),
        rpb.Sentence(id="s-nan", text="a dog.", payload=_struct({"score": float("nan")})),
        rpb.Sentence(id="s-dup", text="a green triangle"),
        rpb.Sentence(id="s-dup", text="two yellow squares"),
        rpb.Sentence(id="", text="no id"),
        rpb.Sentence(id="s-ok-2", text="two dogs run on a beach."),
    ]
    stored_before = _items("sentence", "stored", "OK")
    failed_before = _items("sentence", "failed", "INVALID_ARGUMENT")
    reply = ranker.IngestSentences(rpb.IngestSentencesRequest(sentences=sentences))
    assert [r.id for r in reply.results] == [s.id for s in sentences]
    assert [r.stored for r in reply.results] == [True, False, False, False, False, True, True,
                                                 False, True]  # fmt: skip
    assert reply.stored == 4
    fields = {
        "s-tokens": ("sentences[1].text", "tokens"),
        "s-chars": ("sentences[2].text", "300 characters"),
        "s-big": ("sentences[3].payload", "bytes"),
        "s-nan": ("sentences[4].payload.score", "finite"),
        "": ("sentences[7].id", "1..256"),
    }
    for r in reply.results:
        if r.id in fields:
            field, words = fields[r.id]
            assert r.code == INVALID.value[0] and r.message.startswith(field), r
            assert words in r.message, r.message
    assert _items("sentence", "stored", "OK") - stored_before == 4
    assert _items("sentence", "failed", "INVALID_ARGUMENT") - failed_before == 5
    store = server.app.components["store"]
    assert store.get_sources("sentence", ["s-tokens", "s-chars", "s-big", "s-nan"]) == [None] * 4
    dup = store.get_sources("sentence", ["s-dup"])[0]
    assert dup is not None and dup.text == "two yellow squares"
    # nothing left behind that a later upgrade could trip over (a repair of the live version)
    progress = list(agrpc.AdminStub(channel).Upgrade(apb.UpgradeRequest(
        model_version=store.live_version(), grace_seconds=0)))  # fmt: skip
    assert progress[-1].phase == apb.UpgradeProgress.Phase.DONE and progress[-1].skipped == 0


def test_text_length_is_checked_before_tokenising(channel: grpc.Channel) -> None:
    ranker = rgrpc.RankerStub(channel)
    text = tgrpc.TextEncoderStub(channel)
    start = time.monotonic()
    code, details = _error(lambda: ranker.Search(rpb.SearchRequest(query="a" * 3_000_000)))
    assert code == INVALID and details.startswith("query") and "3000000 characters" in details
    assert time.monotonic() - start < 5
    code, details = _error(lambda: ranker.Search(rpb.SearchRequest(query="dog " * 60)))
    assert code == INVALID and details.startswith("query") and "at most 200" in details
    code, details = _error(
        lambda: text.EncodeText(tpb.EncodeTextRequest(sentences=["fine", "b" * 300]))
    )
    assert code == INVALID and details.startswith("sentences[1]") and "at most 256" in details
    assert ranker.Search(rpb.SearchRequest(query="dog " * 40)).words  # under the limits: fine


def test_wrong_values_get_invalid_argument_naming_the_field(channel: grpc.Channel) -> None:
    ranker = rgrpc.RankerStub(channel)
    image = igrpc.ImageEncoderStub(channel)

    def search(condition: rpb.Condition) -> Any:
        return lambda: ranker.Search(rpb.SearchRequest(query="dog", filter=rpb.Filter(
            must=[condition])))  # fmt: skip

    nan = struct_pb2.Value(number_value=float("nan"))
    inf = struct_pb2.ListValue(values=[struct_pb2.Value(number_value=1),
                                       struct_pb2.Value(number_value=float("-inf"))])  # fmt: skip
    truncated = _png((64, 64))
    cases = [
        (search(rpb.Condition(key="bucket", equals=nan)), INVALID, "filter.must[0].equals"),
        (search(rpb.Condition(key="bucket", any_of=inf)), INVALID, "filter.must[0].any_of[1]"),
        (search(rpb.Condition(key="k" * 300, equals=nan)), INVALID, "filter.must[0].key"),
        (lambda: ranker.SearchSentences(rpb.SearchSentencesRequest(image_id="")),
         INVALID, "image_id"),
        (lambda: ranker.SearchSentences(rpb.SearchSentencesRequest(image_id="a\x00b")),
         INVALID, "image_id"),
        (lambda: ranker.Delete(rpb.DeleteRequest(image_ids=["a\nb"])), INVALID, "image_ids[0]"),
        (lambda: image.EncodeImage(ipb.EncodeImageRequest(image=b"GIF89a nothing")),
         INVALID, "request.image"),
        (lambda: image.EncodeImage(ipb.EncodeImageRequest(image=truncated[: len(truncated) // 2])),
         INVALID, "request.image"),
        (lambda: image.EncodeImage(ipb.EncodeImageRequest(image=_png_header(10_000, 10_000))),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "request.image"),
        (lambda: image.EncodeImage(ipb.EncodeImageRequest(image=_png_header(15_000, 15_000))),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "request.image"),
    ]  # fmt: skip
    for call, code, field in cases:
        got, details = _error(call)
        assert got == code and details.startswith(field), (field, got, details)
        assert " at 0x" not in details, details
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # the service's limit, not PIL's
            assert f"limit of {MAX_PIXELS} pixels" in details, details


def test_settings_bound_a_page_of_hits_and_the_chunk_budget(checkpoint: Path) -> None:
    ok = _settings(checkpoint, Path("unused"))
    assert ok.image_encoder.max_payload_bytes == ok.ranker.max_payload_bytes == 64 << 10
    assert ok.ranker.max_query_chars < ok.text_encoder.max_sentence_chars
    wrong = [
        ({"ranker": {"max_top_k": 1000}}, "max_message_mb"),
        ({"image_encoder": {"max_payload_bytes": 1 << 20}}, "max_message_mb"),
        ({"image_encoder": {"max_chunk_pixels": 1000}}, "max_chunk_pixels"),
        ({"ranker": {"max_query_chars": 2000}}, "max_query_chars"),
    ]
    for extra, words in wrong:
        with pytest.raises(ValueError, match=words):
            _settings(checkpoint, Path("unused"), **extra)


def test_work_stops_when_the_deadline_passes(checkpoint: Path, tmp_path: Path) -> None:
    """Every model call waits 300 ms here, so a 100 ms deadline passes while the query is
    encoded: the store is never asked."""
    slow = start(_settings(checkpoint, tmp_path / "store", inference={"max_delay_ms": 300}))
    try:
        with grpc.insecure_channel(slow.address) as ch:
            ranker = rgrpc.RankerStub(ch)
            encoded, searched = _calls("inference", "text"), _calls("store", "search_images")
            code, _ = _error(lambda: ranker.Search(rpb.SearchRequest(query="a dog."), timeout=0.1))
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED
            time.sleep(0.8)  # the server finishes encoding, then stops
            assert _calls("inference", "text") > encoded, "the server did encode the query"
            assert _calls("store", "search_images") == searched
            request = rpb.SearchSentencesRequest(regions=_regions(1))
            encoded, searched = _calls("inference", "regions"), _calls("store", "search_sentences")
            code, _ = _error(lambda: ranker.SearchSentences(request, timeout=0.1))
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED
            time.sleep(0.8)
            assert _calls("inference", "regions") > encoded
            assert _calls("store", "search_sentences") == searched
    finally:
        slow.stop(0)
