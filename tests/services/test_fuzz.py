"""Property-based fuzzing of every public RPC against a running server (real gRPC, real model).

Whatever the fields hold (and whatever bytes arrive instead of a message), each answer is OK or
a documented client-error code, never INTERNAL, UNKNOWN or a hang; the server stays healthy; and
what was stored before is unchanged afterwards. `make test` runs a bounded number of examples
(the `ci` profile); `make fuzz` runs many more (HYPOTHESIS_PROFILE=fuzz).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from services.config import load_settings
from services.main import RunningApp, start
from services.security.keys import hash_key, new_key
from teran_client.channels import ChannelSecurity, open_channel
from teran_protos.v1 import admin_pb2, admin_pb2_grpc, common_pb2
from teran_protos.v1 import image_encoder_pb2 as ipb
from teran_protos.v1 import image_encoder_pb2_grpc as igrpc
from teran_protos.v1 import ranker_pb2 as rpb
from teran_protos.v1 import ranker_pb2_grpc as rgrpc
from teran_protos.v1 import text_encoder_pb2 as tpb
from teran_protos.v1 import text_encoder_pb2_grpc as tgrpc
from tests import messages
from tests.messages import FEAT_DIM

settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "500")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}
"""The documented answers to a caller's input; INTERNAL and UNKNOWN are our bugs, UNAVAILABLE
and DEADLINE_EXCEEDED would mean the server fell over or hung."""
BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
TIMEOUT_S = 60
GUARD = "fuzz-guard"
"""Payload key of the items stored before fuzzing: searches filtered on it see only them."""
STORED = 12

# --- the server and what it holds ---------------------------------------------------------


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    secret = new_key()
    path = tmp_path_factory.mktemp("fuzz-keys") / "keys.yaml"
    entry = {"name": "fuzzer", "sha256": hash_key(secret), "roles": ["search", "ingest", "admin"]}
    path.write_text(yaml.safe_dump({"keys": [entry]}))
    return secret, path


@pytest.fixture(scope="module")
def server(
    checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, key: tuple[str, Path]
) -> Iterator[RunningApp]:
    running = start(
        load_settings(
            None,
            common={
                "model": {"checkpoint": str(checkpoint)},
                "store": {"path": str(tmp_path_factory.mktemp("fuzz-store"))},
            },
            server={"grpc_port": 0, "metrics_port": None, "auth": {"keys_file": str(key[1])}},
            image_encoder={"max_image_bytes": 1 << 20, "max_pixels": 1_000_000},
        )
    )
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def channel(server: RunningApp, key: tuple[str, Path]) -> Iterator[grpc.Channel]:
    with open_channel(server.address, ChannelSecurity(api_key=key[0])) as ch:
        yield ch


def _guarded(i: int) -> struct_pb2.Struct:
    payload = struct_pb2.Struct()
    payload.update({GUARD: "keep", "n": i})
    return payload


def _snapshot(channel: grpc.Channel) -> dict[str, Any]:
    """What a client can see of the items stored before fuzzing."""
    ranker = rgrpc.RankerStub(channel)
    guard = rpb.Filter(
        must=[rpb.Condition(key=GUARD, equals=struct_pb2.Value(string_value="keep"))]
    )
    seen: dict[str, Any] = {}
    for query in ("a red circle", "two green squares below a cross"):
        found = ranker.Search(rpb.SearchRequest(query=query, top_k=STORED, filter=guard))
        seen[query] = [(h.id, round(h.score, 4), dict(h.payload)) for h in found.hits]
    request = rpb.SearchSentencesRequest(image_id="kept-0", top_k=5, filter=guard)
    sentences = ranker.SearchSentences(request)
    seen["sentences"] = [(h.id, h.text, round(h.score, 4)) for h in sentences.hits]
    return seen


@pytest.fixture(scope="module")
def before(channel: grpc.Channel) -> dict[str, Any]:
    items = [
        ipb.IngestItem(id=f"kept-{i}", regions=messages.region_features(i), payload=_guarded(i))
        for i in range(STORED)
    ]
    assert all(r.stored for r in igrpc.ImageEncoderStub(channel).Ingest(iter(items)))
    sentences = [
        rpb.Sentence(id=f"kept-s{i}", text=text, payload=_guarded(i))
        for i, text in enumerate(["a red circle.", "a blue square above a cross.", "a cat."])
    ]
    rgrpc.RankerStub(channel).IngestSentences(rpb.IngestSentencesRequest(sentences=sentences))
    return _snapshot(channel)


def _answer(call: Any) -> grpc.StatusCode:
    try:
        result = call()
        if isinstance(result, Iterator):
            for _ in result:
                pass
    except grpc.RpcError as err:
        code = err.code()
        assert code in ALLOWED, f"{code.name}: {err.details()}"
        assert "0x" not in (err.details() or ""), f"an object's address leaked: {err.details()}"
        return code
    return grpc.StatusCode.OK


# --- strategies ---------------------------------------------------------------------------

texts = st.text(max_size=300) | st.text(alphabet="ab .", min_size=1, max_size=4000)
ids = st.text(max_size=300)
scalars = (
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers(-(2**60), 2**60) | texts
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


def _value(v: Any) -> struct_pb2.Value:
    out = struct_pb2.Value()
    if v is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, int | float):
        out.number_value = float(v)
    elif isinstance(v, str):
        out.string_value = v
    elif isinstance(v, list):
        out.list_value.values.extend(_value(x) for x in v)
    else:
        for k, x in v.items():
            out.struct_value.fields[k].CopyFrom(_value(x))
    return out


@st.composite
def structs(draw: st.DrawFn) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    for k, v in draw(st.dictionaries(texts, json_values, max_size=5)).items():
        out.fields[k].CopyFrom(_value(v))
    return out


@st.composite
def filters(draw: st.DrawFn) -> rpb.Filter:
    conditions = []
    for _ in range(draw(st.integers(0, 3)) if draw(st.booleans()) else draw(st.integers(60, 70))):
        cond = rpb.Condition(key=draw(texts))
        kind = draw(st.sampled_from(["equals", "any_of", "none"]))
        if kind == "equals":
            cond.equals.CopyFrom(_value(draw(json_values)))
        elif kind == "any_of":
            cond.any_of.values.extend(_value(v) for v in draw(st.lists(json_values, max_size=5)))
        conditions.append(cond)
    return rpb.Filter(must=conditions)


@st.composite
def matrices(draw: st.DrawFn) -> common_pb2.Matrix:
    rows = draw(st.integers(0, 200) | st.integers(0, 2**32 - 1))
    cols = draw(st.sampled_from([0, 1, FEAT_DIM, 321]) | st.integers(0, 2**32 - 1))
    if draw(st.booleans()) and 0 < rows * cols * 4 <= 1 << 20:
        values = draw(st.sampled_from([0.0, 1.0, math.nan, math.inf, -1e30]))
        data = np.full(rows * cols, values, dtype="<f4").tobytes()
    else:
        data = draw(st.binary(max_size=4096))
    return common_pb2.Matrix(rows=rows, cols=cols, data=data)


@st.composite
def region_features(draw: st.DrawFn) -> common_pb2.RegionFeatures:
    features = draw(matrices())
    n = draw(st.integers(0, 6))
    coords = st.floats(allow_nan=True, allow_infinity=True, width=32)
    boxes = [
        common_pb2.Box(x1=draw(coords), y1=draw(coords), x2=draw(coords), y2=draw(coords))
        for _ in range(n)
    ]
    return common_pb2.RegionFeatures(features=features, boxes=boxes)


def _picture(size: tuple[int, int], kind: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(out, kind)
    return out.getvalue()


pictures = (
    st.binary(max_size=2048)
    | st.builds(_picture, st.tuples(st.integers(1, 64), st.integers(1, 64)),
                st.sampled_from(["PNG", "JPEG", "GIF"]))
    | st.builds(lambda b, cut: b[:cut], st.just(_picture((48, 32), "PNG")), st.integers(0, 200))
)  # fmt: skip
sources = st.one_of(
    st.builds(lambda b: {"image": b}, pictures),
    st.builds(lambda r: {"regions": r}, region_features()),
    st.just({}),
)
counts = st.integers(0, 2**32 - 1) | st.integers(0, 200)

# --- the properties ---------------------------------------------------------------------


@given(query=texts, top_k=counts, offset=counts, flt=filters(), explain=st.booleans())
def test_search(channel: grpc.Channel, before: Any, query: str, top_k: int, offset: int,
                flt: rpb.Filter, explain: bool) -> None:  # fmt: skip
    request = rpb.SearchRequest(
        query=query, top_k=top_k, offset=offset, filter=flt, explain=explain
    )
    _answer(lambda: rgrpc.RankerStub(channel).Search(request, timeout=TIMEOUT_S))


image_queries = st.one_of(
    st.builds(lambda b: {"image": b}, pictures),
    st.builds(lambda r: {"regions": r}, region_features()),
    st.builds(lambda i: {"image_id": i}, ids),
    st.just({}),
)


@given(source=image_queries, top_k=counts, offset=counts, flt=filters())
def test_search_sentences(channel: grpc.Channel, before: Any, source: dict[str, Any],
                          top_k: int, offset: int, flt: rpb.Filter) -> None:  # fmt: skip
    request = rpb.SearchSentencesRequest(top_k=top_k, offset=offset, filter=flt, **source)
    _answer(lambda: rgrpc.RankerStub(channel).SearchSentences(request, timeout=TIMEOUT_S))


@given(source=image_queries, top_k=counts, offset=counts, flt=filters())
def test_search_similar_images(channel: grpc.Channel, before: Any, source: dict[str, Any],
                               top_k: int, offset: int, flt: rpb.Filter) -> None:  # fmt: skip
    request = rpb.SearchSimilarImagesRequest(top_k=top_k, offset=offset, filter=flt, **source)
    _answer(lambda: rgrpc.RankerStub(channel).SearchSimilarImages(request, timeout=TIMEOUT_S))


@given(items=st.lists(st.builds(lambda i, s, p, u: (i, s, p, u), ids, sources, structs(), texts),
                      max_size=6))  # fmt: skip
def test_ingest(channel: grpc.Channel, before: Any, items: list[Any]) -> None:
    messages = [ipb.IngestItem(id=i, payload=p, uri=u, **s) for i, s, p, u in items]
    stub = igrpc.ImageEncoderStub(channel)
    results: list[ipb.IngestResult] = []

    def call() -> None:
        results.extend(stub.Ingest(iter(messages), timeout=TIMEOUT_S))

    if _answer(call) == grpc.StatusCode.OK:
        assert [r.id for r in results] == [m.id for m in messages], "one result per item, in order"
        for r in results:
            assert r.stored or BY_NUMBER[r.code] in ALLOWED - {grpc.StatusCode.OK}, r.message


@given(sentences=st.lists(st.builds(lambda i, t, p: rpb.Sentence(id=i, text=t, payload=p),
                                    ids, texts, structs()), max_size=5))  # fmt: skip
def test_ingest_sentences(channel: grpc.Channel, before: Any, sentences: list[Any]) -> None:
    request = rpb.IngestSentencesRequest(sentences=sentences)
    _answer(lambda: rgrpc.RankerStub(channel).IngestSentences(request, timeout=TIMEOUT_S))


@given(images=st.lists(ids, max_size=5), sentences=st.lists(ids, max_size=5))
def test_delete(
    channel: grpc.Channel, before: Any, images: list[str], sentences: list[str]
) -> None:
    request = rpb.DeleteRequest(
        image_ids=[i for i in images if not i.startswith("kept-")],
        sentence_ids=[i for i in sentences if not i.startswith("kept-")],
    )
    _answer(lambda: rgrpc.RankerStub(channel).Delete(request, timeout=TIMEOUT_S))


@given(sentences=st.lists(texts, max_size=70), version=texts)
def test_encode_text(channel: grpc.Channel, sentences: list[str], version: str) -> None:
    request = tpb.EncodeTextRequest(sentences=sentences, model_version=version)
    _answer(lambda: tgrpc.TextEncoderStub(channel).EncodeText(request, timeout=TIMEOUT_S))


@given(source=sources, version=texts)
def test_encode_image(channel: grpc.Channel, source: dict[str, Any], version: str) -> None:
    request = ipb.EncodeImageRequest(model_version=version, **source)
    _answer(lambda: igrpc.ImageEncoderStub(channel).EncodeImage(request, timeout=TIMEOUT_S))


@given(version=texts)
def test_admin_drop_version(channel: grpc.Channel, before: Any, version: str) -> None:
    request = admin_pb2.DropVersionRequest(model_version=version)
    _answer(lambda: admin_pb2_grpc.AdminStub(channel).DropVersion(request, timeout=TIMEOUT_S))


METHODS = [
    "/teran.v1.Ranker/Search", "/teran.v1.Ranker/SearchSentences",
    "/teran.v1.Ranker/SearchSimilarImages",
    "/teran.v1.Ranker/IngestSentences", "/teran.v1.Ranker/Delete", "/teran.v1.Ranker/Stats",
    "/teran.v1.TextEncoder/EncodeText", "/teran.v1.ImageEncoder/EncodeImage",
    "/teran.v1.Admin/Status",
]  # fmt: skip


@given(method=st.sampled_from(METHODS), data=st.binary(max_size=512))
def test_raw_bytes(channel: grpc.Channel, before: Any, method: str, data: bytes) -> None:
    """Bytes that are not the method's message (or are, by chance): never INTERNAL."""
    if method.endswith("/Delete"):
        return  # random bytes may decode as a Delete of anything; the property is for reads
    _answer(lambda: channel.unary_unary(method)(data, timeout=TIMEOUT_S))


@given(data=st.lists(st.binary(max_size=256), min_size=1, max_size=4))
def test_raw_ingest_stream(channel: grpc.Channel, before: Any, data: list[bytes]) -> None:
    call = channel.stream_stream("/teran.v1.ImageEncoder/Ingest")
    _answer(lambda: call(iter(data), timeout=TIMEOUT_S))


@given(header=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200))
def test_authorization_header(server: RunningApp, header: str) -> None:
    with grpc.insecure_channel(server.address) as plain:
        stub = rgrpc.RankerStub(plain)
        metadata = [("authorization", header)]  # what a client library lets through
        code = _answer(lambda: stub.Stats(rpb.StatsRequest(), metadata=metadata, timeout=TIMEOUT_S))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_zz_the_server_is_healthy_and_the_stored_items_unchanged(
    channel: grpc.Channel, before: dict[str, Any]
) -> None:
    """Runs last in this file (pytest keeps file order)."""
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert _snapshot(channel) == before
    assert rgrpc.RankerStub(channel).Stats(rpb.StatsRequest()).images >= STORED
