"""The client's values as request messages and back (the only place it touches protos)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from google.protobuf import json_format, struct_pb2

from teran_client.results import (
    Box,
    FilterSpec,
    ImageHit,
    IngestResult,
    Item,
    Scalar,
    SearchResult,
    SentenceHit,
    SentenceSearchResult,
    Stats,
    WordAlignment,
)
from teran_protos.v1 import common_pb2
from teran_protos.v1 import image_encoder_pb2 as ie_pb
from teran_protos.v1 import ranker_pb2 as rk_pb

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
)
"""File name endings `ingest_folder` treats as images (case-insensitive)."""


def to_struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(dict(values))
    return out


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    return dict(json_format.MessageToDict(struct))


def to_value(value: Scalar) -> struct_pb2.Value:
    holder = to_struct({"v": value})
    return holder.fields["v"]


def to_filter(spec: FilterSpec | None) -> rk_pb.Filter | None:
    """dict -> Filter: a scalar is `equals`, a list/tuple/set is `any_of`."""
    if not spec:
        return None
    conditions = []
    for key, value in spec.items():
        if isinstance(value, str | int | float | bool):
            conditions.append(rk_pb.Condition(key=key, equals=to_value(value)))
        else:
            values = struct_pb2.ListValue()
            values.extend(list(value))
            conditions.append(rk_pb.Condition(key=key, any_of=values))
    return rk_pb.Filter(must=conditions)


def to_regions(features: np.ndarray, boxes: np.ndarray) -> common_pb2.RegionFeatures:
    feats = np.ascontiguousarray(features, dtype="<f4")
    bxs = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if feats.ndim != 2:
        raise ValueError(f"region features must be 2-D [regions, dim], got shape {feats.shape}")
    return common_pb2.RegionFeatures(
        features=common_pb2.Matrix(rows=feats.shape[0], cols=feats.shape[1], data=feats.tobytes()),
        boxes=[common_pb2.Box(x1=b[0], y1=b[1], x2=b[2], y2=b[3]) for b in bxs.tolist()],
    )


def to_ingest_item(item: Item) -> ie_pb.IngestItem:
    """Item -> proto, reading `path`; raises ValueError/OSError for an item that cannot be sent."""
    sources = [s for s in (item.image, item.path, item.regions) if s is not None]
    if len(sources) != 1:
        raise ValueError("set exactly one of image, path or regions")
    message = ie_pb.IngestItem(id=item.id, uri=item.uri, payload=to_struct(item.payload))
    if item.regions is not None:
        message.regions.CopyFrom(to_regions(*item.regions))
    elif item.image is not None:
        message.image = item.image
    elif item.path is not None:
        message.image = Path(item.path).read_bytes()
    return message


def from_alignment(a: common_pb2.WordAlignment) -> WordAlignment:
    box = Box(a.box.x1, a.box.y1, a.box.x2, a.box.y2)
    return WordAlignment(a.word, a.region, box, a.similarity)


def folder_items(
    folder: str | Path,
    payload: Mapping[str, Any] | None = None,
    recursive: bool = True,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
) -> list[Item]:
    """The images under `folder`, sorted: id = path relative to `folder`, uri = the file path.

    A list (not a generator) so a caller can show progress against a known total.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    wanted = {e.lower() for e in extensions}
    files = root.rglob("*") if recursive else root.glob("*")
    return [
        Item(
            id=p.relative_to(root).as_posix(),
            path=p,
            uri=str(p.resolve()),
            payload=dict(payload or {}),
        )
        for p in sorted(files)
        if p.is_file() and p.suffix.lower() in wanted
    ]


def search_request(
    query: str, top_k: int, offset: int, filter: FilterSpec | None, explain: bool
) -> rk_pb.SearchRequest:
    request = rk_pb.SearchRequest(query=query, top_k=top_k, offset=offset, explain=explain)
    flt = to_filter(filter)
    if flt is not None:
        request.filter.CopyFrom(flt)
    return request


def search_result(response: rk_pb.SearchResponse) -> SearchResult:
    return SearchResult(
        hits=[
            ImageHit(
                id=h.id,
                score=h.score,
                uri=h.uri,
                payload=from_struct(h.payload),
                alignment=[from_alignment(a) for a in h.alignment],
            )
            for h in response.hits
        ],
        words=list(response.words),
        model_version=response.model_version,
    )


ImageQueryRequest = TypeVar(
    "ImageQueryRequest", rk_pb.SearchSentencesRequest, rk_pb.SearchSimilarImagesRequest
)
"""The requests whose `query` is an image."""


def image_query_request(
    kind: type[ImageQueryRequest],
    image: bytes | None,
    image_id: str | None,
    regions: tuple[np.ndarray, np.ndarray] | None,
    top_k: int,
    offset: int,
    filter: FilterSpec | None,
) -> ImageQueryRequest:
    """A SearchSentences or SearchSimilarImages request: exactly one of an encoded image, a
    stored image's id or precomputed regions."""
    given = [x for x in (image, image_id, regions) if x is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of image, image_id or regions")
    request = kind(top_k=top_k, offset=offset)
    if image is not None:
        request.image = image
    elif image_id is not None:
        request.image_id = image_id
    else:
        assert regions is not None
        request.regions.CopyFrom(to_regions(*regions))
    flt = to_filter(filter)
    if flt is not None:
        request.filter.CopyFrom(flt)
    return request


def sentence_search_result(response: rk_pb.SearchSentencesResponse) -> SentenceSearchResult:
    return SentenceSearchResult(
        hits=[SentenceHit(h.id, h.text, h.score, from_struct(h.payload)) for h in response.hits],
        model_version=response.model_version,
    )


def sentence_batches(
    sentences: Iterable[tuple[str, str] | tuple[str, str, Mapping[str, Any]]], size: int
) -> Iterator[rk_pb.IngestSentencesRequest]:
    """(id, text[, payload]) sentences in requests of at most `size`."""
    batch: list[rk_pb.Sentence] = []
    for entry in sentences:
        payload: Mapping[str, Any] = entry[2] if len(entry) == 3 else {}
        batch.append(rk_pb.Sentence(id=entry[0], text=entry[1], payload=to_struct(payload)))
        if len(batch) == size:
            yield rk_pb.IngestSentencesRequest(sentences=batch)
            batch = []
    if batch:
        yield rk_pb.IngestSentencesRequest(sentences=batch)


def sentence_results(response: rk_pb.IngestSentencesResponse) -> list[IngestResult]:
    return [IngestResult(r.id, r.stored, r.code, r.message) for r in response.results]


def ingest_result(r: ie_pb.IngestResult) -> IngestResult:
    return IngestResult(r.id, r.stored, r.code, r.message, r.regions)


def stats_of(r: rk_pb.StatsResponse) -> Stats:
    return Stats(
        int(r.images), int(r.sentences), r.model_version, r.image_collection,
        r.sentence_collection,
    )  # fmt: skip
