"""The HTTP/JSON gateway against a real platform (target all, keys on, 127.0.0.1): every public
RPC has a route in a valid OpenAPI document, JSON maps to the proto one to one, pictures come
back as stored, and every mistake gets its HTTP status with a body naming the field."""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from openapi_spec_validator import validate
from PIL import Image

from services.gateway.app import ROUTES
from services.main import RunningApp
from services.modules import GATEWAY
from services.security.keys import new_key
from teran_client import ChannelSecurity
from teran_client.channels import open_channel
from teran_protos.v1 import image_encoder_pb2, ranker_pb2
from teran_protos.v1 import ranker_pb2 as rpb
from teran_protos.v1 import ranker_pb2_grpc as rgrpc
from tests.services.http_helpers import Answer, call, multipart, start_gateway_alone, start_platform
from tests.services.test_security import _write_keys

MAX_UPLOAD = 64 << 10
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    names = {"searcher": ["search"], "loader": ["ingest"], "root": ["search", "ingest"]}
    keys = {name: (new_key(), roles) for name, roles in names.items()}
    keys["slow"] = (new_key(), ["search"])
    path = tmp_path_factory.mktemp("keys") / "keys.yaml"
    _write_keys(path, keys, slow={"rate_per_s": 0.01, "burst": 1})
    return {"path": path, **{name: key for name, (key, _) in keys.items()}}


@pytest.fixture(scope="module")
def platform(
    checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Any]
) -> Iterator[RunningApp]:
    running = start_platform(
        checkpoint,
        tmp_path_factory.mktemp("store"),
        server={"auth": {"keys_file": str(keys["path"])}},
        gateway={"max_upload_bytes": MAX_UPLOAD},
    )
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def url(platform: RunningApp) -> str:
    return str(platform.app.components[GATEWAY].url)


@pytest.fixture(scope="module")
def collection(url: str, keys: dict[str, Any]) -> dict[str, bytes]:
    """Three pictures, two uploaded as files and one as proto3 JSON (base64), and sentences."""
    pictures = {name: _png(c) for name, c in COLOURS.items()}
    for name in ("red", "green"):
        body, kind = multipart(
            {"id": f"img/{name}", "payload": json.dumps({"colour": name, "n": 1})},
            {"image": pictures[name]},
        )
        answer = call(
            f"{url}/v1/images:upload", "POST", raw=body, content_type=kind, key=keys["loader"]
        )
        assert answer.status == 200, answer.body
        assert answer.json()["stored"] is True and answer.json()["regions"] > 0
    item = {
        "id": "img/blue",
        "image": base64.b64encode(pictures["blue"]).decode(),
        "uri": "file:///blue.png",
        "payload": {"colour": "blue"},
    }
    answer = call(f"{url}/v1/images", "POST", item, key=keys["loader"])
    assert answer.status == 200 and answer.json()["stored"] is True, answer.body
    sentences = [{"id": f"s/{n}", "text": f"a {n} picture"} for n in COLOURS]
    answer = call(f"{url}/v1/sentences", "POST", {"sentences": sentences}, key=keys["loader"])
    assert answer.json()["stored"] == 3
    return pictures


def test_every_public_rpc_has_a_route_in_a_valid_openapi_document(url: str) -> None:
    answer = call(f"{url}/openapi.json")
    assert answer.status == 200
    document = answer.json()
    validate(document)  # raises on an invalid OpenAPI 3 document
    operations = {
        op["operationId"]: (path, verb)
        for path, methods in document["paths"].items()
        for verb, op in methods.items()
    }
    for file in (ranker_pb2, image_encoder_pb2):
        for service in file.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                assert f"{service.name}.{method.name}" in operations, method.full_name
    for method in ("SearchSentences", "SearchSimilarImages"):  # the image queries as files
        assert operations[f"Ranker.{method}.upload"][1] == "post"
    search = document["paths"]["/v1/search"]["post"]
    schema = search["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    fields = document["components"]["schemas"][schema.rsplit("/", 1)[1]]["properties"]
    assert set(fields) == {f.name for f in rpb.SearchRequest.DESCRIPTOR.fields}
    assert {"400", "401", "403", "413", "429", "503"} <= set(search["responses"])
    assert len(ROUTES) == len({(r.service, r.method) for r in ROUTES})


def test_search_maps_json_to_the_rpc_and_back(
    url: str, keys: dict[str, Any], collection: dict[str, bytes], platform: RunningApp
) -> None:
    body = {"query": "a red picture", "top_k": 3, "explain": True}
    answer = call(f"{url}/v1/search", "POST", body, key=keys["searcher"])
    assert answer.status == 200, answer.body
    result = answer.json()
    with open_channel(platform.address, ChannelSecurity(api_key=keys["searcher"])) as channel:
        direct = rgrpc.RankerStub(channel).Search(rpb.SearchRequest(**body))  # type: ignore[arg-type]
    assert [h["id"] for h in result["hits"]] == [h.id for h in direct.hits]
    assert result["words"] == list(direct.words) and result["words"]
    hit = result["hits"][0]
    assert len(hit["alignment"]) == len(result["words"])
    assert set(hit["alignment"][0]["box"]) == {"x1", "y1", "x2", "y2"}
    filtered = call(
        f"{url}/v1/search",
        "POST",
        {"query": "a picture", "filter": {"must": [{"key": "colour", "equals": "blue"}]}},
        key=keys["searcher"],
    ).json()
    assert [h["id"] for h in filtered["hits"]] == ["img/blue"]
    assert filtered["hits"][0]["uri"] == "file:///blue.png"
    stats = call(f"{url}/v1/stats", key=keys["searcher"]).json()
    assert stats["images"] == 3 and stats["sentences"] == 3 and stats["model_version"]


def test_sentences_for_a_stored_image_and_for_an_upload(
    url: str, keys: dict[str, Any], collection: dict[str, bytes]
) -> None:
    by_id = call(
        f"{url}/v1/search-sentences",
        "POST",
        {"image_id": "img/green", "top_k": 2},
        key=keys["searcher"],
    )
    assert by_id.status == 200, by_id.body
    assert len(by_id.json()["hits"]) == 2 and by_id.json()["hits"][0]["text"]
    body, kind = multipart({"top_k": "3"}, {"image": collection["green"]})
    uploaded = call(
        f"{url}/v1/search-sentences:upload",
        "POST",
        raw=body,
        content_type=kind,
        key=keys["searcher"],
    )
    assert uploaded.status == 200, uploaded.body
    assert {h["id"] for h in uploaded.json()["hits"]} == {"s/red", "s/green", "s/blue"}


def test_similar_images_for_a_stored_image_and_for_an_upload(
    url: str, keys: dict[str, Any], collection: dict[str, bytes], platform: RunningApp
) -> None:
    searcher = keys["searcher"]
    by_id = call(
        f"{url}/v1/search-similar-images", "POST", {"image_id": "img/red", "top_k": 5}, key=searcher
    )
    assert by_id.status == 200, by_id.body
    request = rpb.SearchSimilarImagesRequest(image_id="img/red", top_k=5)
    with open_channel(platform.address, ChannelSecurity(api_key=searcher)) as channel:
        direct = rgrpc.RankerStub(channel).SearchSimilarImages(request)
    hits = by_id.json()["hits"]
    assert [(h["id"], h["score"]) for h in hits] == [
        (h.id, pytest.approx(h.score)) for h in direct.hits
    ]
    assert "img/red" not in {h["id"] for h in hits} and hits  # the query image left out
    assert by_id.json()["words"] == [] and by_id.json()["model_version"] == direct.model_version
    body, kind = multipart(
        {"top_k": "2", "filter": json.dumps({"must": [{"key": "colour", "any_of": ["green"]}]})},
        {"image": collection["green"]},
    )
    uploaded = call(
        f"{url}/v1/search-similar-images:upload",
        "POST",
        raw=body,
        content_type=kind,
        key=searcher,
    )
    assert uploaded.status == 200, uploaded.body
    assert [h["id"] for h in uploaded.json()["hits"]] == ["img/green"]  # itself, by its pixels
    assert uploaded.json()["hits"][0]["payload"] == {"colour": "green", "n": 1}
    similar = f"{url}/v1/search-similar-images"
    _error(call(similar, "POST", {"image_id": "nope"}, key=searcher), 404, "image_id")
    _error(call(similar, "POST", {}, key=searcher), 400, "query")
    _error(call(similar, "POST", {"image_id": "img/red", "top_k": 500}, key=searcher), 400, "top_k")
    denied = call(similar, "POST", {"image_id": "img/red"}, key=keys["loader"])
    assert _error(denied, 403)["code"] == "PERMISSION_DENIED"  # the search role


def test_source_and_thumbnail(url: str, keys: dict[str, Any], collection: dict[str, bytes]) -> None:
    source = call(f"{url}/v1/images/img/red/source", key=keys["searcher"])
    assert source.status == 200 and source.content_type == "image/png"
    assert source.body == collection["red"]  # as received
    thumb = call(f"{url}/v1/images/img/red/thumbnail?max_side=32", key=keys["searcher"])
    assert thumb.status == 200 and thumb.content_type == "image/jpeg"
    with Image.open(io.BytesIO(thumb.body)) as picture:
        assert max(picture.size) == 32 and picture.size == (32, 21)
    meta = call(
        f"{url}/v1/get-image", "POST", {"id": "img/blue", "max_side": 16}, key=keys["searcher"]
    ).json()
    assert meta["content_type"] == "image/jpeg" and meta["payload"] == {"colour": "blue"}
    assert base64.b64decode(meta["data"])[:2] == b"\xff\xd8"


def _error(answer: Answer, status: int, field: str | None = None) -> dict[str, Any]:
    assert answer.status == status, (answer.status, answer.body)
    error: dict[str, Any] = answer.json()["error"]
    assert error["status"] == status and error["message"]
    if field is not None:
        assert error["field"] == field, error
    return error


def test_mistakes_get_their_http_status_and_field(
    url: str, keys: dict[str, Any], collection: dict[str, bytes]
) -> None:
    searcher, search = keys["searcher"], f"{url}/v1/search"
    _error(call(search, "POST", {"query": ""}, key=searcher), 400, "query")
    _error(call(search, "POST", {"query": "a cat", "top_k": 1000}, key=searcher), 400, "top_k")
    _error(call(search, "POST", {"query": "a cat", "topk": 3}, key=searcher), 400, "topk")
    _error(call(search, "POST", {"query": "a cat", "top_k": "x"}, key=searcher), 400, "top_k")
    _error(call(search, "POST", raw=b"{not json", key=searcher), 400)
    bad_filter = {"query": "a cat", "filter": {"must": [{"key": "colour"}]}}
    _error(call(search, "POST", bad_filter, key=searcher), 400, "filter.must[0]")
    assert _error(call(search, "POST", {"query": "a cat"}), 401)["code"] == "UNAUTHENTICATED"
    _error(call(search, "POST", {"query": "a cat"}, key="teran_unknown"), 401)
    denied = call(f"{url}/v1/images", "POST", {"id": "x", "image": ""}, key=searcher)
    assert _error(denied, 403)["code"] == "PERMISSION_DENIED"
    _error(call(f"{url}/v1/images/nope/thumbnail", key=searcher), 404, "id")
    missing = call(f"{url}/v1/search-sentences", "POST", {"image_id": "nope"}, key=searcher)
    _error(missing, 404, "image_id")
    _error(call(f"{url}/v1/images/img/red/thumbnail?max_side=5000", key=searcher), 400, "max_side")
    broken = {"id": "img/broken", "image": base64.b64encode(b"not a picture").decode()}
    _error(call(f"{url}/v1/images", "POST", broken, key=keys["loader"]), 400, "items[0].image")
    huge = {"query": "x" * (MAX_UPLOAD * 3)}
    assert _error(call(search, "POST", huge, key=searcher), 413, "body")["code"] == (
        "RESOURCE_EXHAUSTED"
    )
    body, kind = multipart({"id": "img/x", "payload": "[1]"}, {"image": collection["red"]})
    listed = call(
        f"{url}/v1/images:upload", "POST", raw=body, content_type=kind, key=keys["loader"]
    )
    _error(listed, 400, "payload")
    body, kind = multipart({"id": "img/big"}, {"image": b"\0" * (MAX_UPLOAD + 10)})
    big = call(f"{url}/v1/images:upload", "POST", raw=body, content_type=kind, key=keys["loader"])
    _error(big, 413, "image")
    call(f"{url}/v1/stats", key=keys["slow"])  # the burst of one
    assert "rate" in _error(call(f"{url}/v1/stats", key=keys["slow"]), 429)["message"]


def test_regions_have_no_picture_and_get_image_needs_the_search_role(
    platform: RunningApp, keys: dict[str, Any]
) -> None:
    from teran_client import Item, TeranClient

    with TeranClient(platform.address, api_key=keys["root"]) as client:
        import numpy as np

        features = np.random.default_rng(0).normal(size=(3, 320)).astype(np.float32)
        boxes = np.array([[0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5], [0, 0.5, 1, 1]], np.float32)
        [result] = client.ingest([Item("img/regions", regions=(features, boxes))])
        assert result.stored, result
    request = rpb.GetImageRequest(id="img/regions")
    with open_channel(platform.address, ChannelSecurity(api_key=keys["root"])) as channel:
        with pytest.raises(grpc.RpcError) as info:
            rgrpc.RankerStub(channel).GetImage(request)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with open_channel(platform.address, ChannelSecurity(api_key=keys["loader"])) as channel:
        with pytest.raises(grpc.RpcError) as info:
            rgrpc.RankerStub(channel).GetImage(request)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_keep_alive_answers_are_not_held_back_by_nagle(platform: RunningApp, url: str) -> None:
    """Every connection has TCP_NODELAY: without it a response's body waited for the client's
    delayed ACK of its headers, 40 ms a request on a kept-alive connection."""
    gateway = platform.app.components[GATEWAY]
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/healthz")
            assert conn.getresponse().read() == b'{"status":"ok"}'
        sockets = [
            c.transport.get_extra_info("socket") for c in gateway.server.server_state.connections
        ]
        assert sockets and all(
            s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets
        )
    finally:
        conn.close()


def test_a_gateway_alone_answers_503_while_its_upstream_is_down() -> None:
    running = start_gateway_alone()
    try:
        gateway = running.app.components[GATEWAY]
        error = _error(call(f"{gateway.url}/v1/stats", key="teran_x"), 503)
        assert error["code"] == "UNAVAILABLE" and "unavailable" in error["message"]
        assert call(f"{gateway.url}/readyz").status == 503
        assert call(f"{gateway.url}/healthz").status == 200
    finally:
        running.stop(0)
