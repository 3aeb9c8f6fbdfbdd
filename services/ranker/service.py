"""The Ranker gRPC service (the public API): proto in, `Ranker` out."""

from __future__ import annotations

from typing import Any, Protocol

import grpc

from services.convert import (
    check_ids,
    from_list_value,
    from_struct,
    from_value,
    to_struct,
)
from services.errors import InvalidArgument, NotFound, grpc_errors
from services.image_encoder.encoding import EncodedImage
from services.ranker.search import Ranker
from services.store import AnyOf, Equals, PayloadFilter
from teran.v1 import common_pb2
from teran.v1 import ranker_pb2 as pb
from teran.v1 import ranker_pb2_grpc as pb_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["Ranker"].full_name
MAX_CONDITIONS = 64
MAX_SENTENCES = 256


class ImageSource(Protocol):
    """Turns a query image (bytes or regions) into region embeddings: in-process `ImageEncoding`
    or a gRPC client of the ImageEncoder service."""

    def encode_query(
        self, source: str, request: Any, field: str, version: str | None = None
    ) -> EncodedImage: ...


def to_filter(message: pb.Filter, field: str = "filter") -> PayloadFilter | None:
    if not message.must:
        return None
    if len(message.must) > MAX_CONDITIONS:
        raise InvalidArgument(field, f"{len(message.must)} conditions, at most {MAX_CONDITIONS}")
    conditions: list[Equals | AnyOf] = []
    for i, cond in enumerate(message.must):
        name = f"{field}.must[{i}]"
        if not cond.key:
            raise InvalidArgument(f"{name}.key", "empty key")
        kind = cond.WhichOneof("match")
        if kind == "equals":
            conditions.append(Equals(cond.key, from_value(cond.equals)))
        elif kind == "any_of":
            conditions.append(AnyOf(cond.key, from_list_value(cond.any_of)))
        else:
            raise InvalidArgument(name, "set equals or any_of")
    try:
        return PayloadFilter(conditions)
    except ValueError as err:
        raise InvalidArgument(field, str(err)) from err


class RankerServicer(pb_grpc.RankerServicer):
    def __init__(self, ranker: Ranker, images: ImageSource | None) -> None:
        self.ranker = ranker
        self.images = images

    @grpc_errors
    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        found = self.ranker.search(
            request.query,
            request.top_k,
            request.offset,
            to_filter(request.filter),
            request.explain,
        )
        return pb.SearchResponse(
            hits=[
                pb.ImageHit(
                    id=r.image.id,
                    score=r.score,
                    uri=r.image.uri,
                    payload=to_struct(r.image.payload),
                    alignment=[
                        common_pb2.WordAlignment(
                            word=a.word,
                            region=a.region,
                            box=common_pb2.Box(x1=a.box[0], y1=a.box[1], x2=a.box[2], y2=a.box[3]),
                            similarity=a.similarity,
                        )
                        for a in r.alignment
                    ],
                )
                for r in found.results
            ],
            words=found.words,
            model_version=found.version,
        )

    @grpc_errors
    def SearchSentences(
        self, request: pb.SearchSentencesRequest, context: grpc.ServicerContext
    ) -> pb.SearchSentencesResponse:
        source = request.WhichOneof("query")
        if source is None:
            raise InvalidArgument("query", "set image, regions or image_id")
        index = self.ranker.store.live()
        if source == "image_id":
            stored = index.images.get([request.image_id])[0]
            if stored is None:
                raise NotFound(f"image_id: no stored image {request.image_id!r}")
            image = EncodedImage(stored.regions, stored.boxes, stored.regions.mean(0))
        else:
            if self.images is None:
                raise InvalidArgument("query", "this ranker has no image encoder configured")
            image = self.images.encode_query(source, request, "query", index.version)
        results = self.ranker.search_sentences(
            image, index, request.top_k, request.offset, to_filter(request.filter)
        )
        return pb.SearchSentencesResponse(
            hits=[
                pb.SentenceHit(
                    id=r.sentence.id,
                    text=r.sentence.text,
                    score=r.score,
                    payload=to_struct(r.sentence.payload),
                )
                for r in results
            ],
            model_version=index.version,
        )

    @grpc_errors
    def IngestSentences(
        self, request: pb.IngestSentencesRequest, context: grpc.ServicerContext
    ) -> pb.IngestSentencesResponse:
        if len(request.sentences) > MAX_SENTENCES:
            raise InvalidArgument(
                "sentences", f"{len(request.sentences)} sentences, at most {MAX_SENTENCES}"
            )
        items = []
        for i, s in enumerate(request.sentences):
            payload = from_struct(s.payload)
            if any(k.startswith("_") for k in payload):
                raise InvalidArgument(
                    f"sentences[{i}].payload", "keys starting with _ are reserved"
                )
            items.append((s.id, s.text, payload))
        return pb.IngestSentencesResponse(stored=self.ranker.ingest_sentences(items))

    @grpc_errors
    def Delete(self, request: pb.DeleteRequest, context: grpc.ServicerContext) -> pb.DeleteResponse:
        image_ids = check_ids(request.image_ids, "image_ids")
        sentence_ids = check_ids(request.sentence_ids, "sentence_ids")
        if not image_ids and not sentence_ids:
            raise InvalidArgument("image_ids", "give image_ids and/or sentence_ids")
        store = self.ranker.store
        missing = store.delete_everywhere("image", image_ids) if image_ids else []
        missing += store.delete_everywhere("sentence", sentence_ids) if sentence_ids else []
        return pb.DeleteResponse(
            deleted=len(image_ids) + len(sentence_ids) - len(missing), not_found=missing
        )

    @grpc_errors
    def Stats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.StatsResponse:
        index = self.ranker.store.live()
        return pb.StatsResponse(
            images=index.images.count(),
            sentences=index.sentences.count(),
            model_version=index.version,
            image_collection=index.images.name,
            sentence_collection=index.sentences.name,
        )
