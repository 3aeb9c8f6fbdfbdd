"""The Ranker gRPC service (the public API): proto in, `Ranker` out."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from services.convert import (
    check_id,
    check_ids,
    check_key,
    check_payload,
    from_list_value,
    from_value,
    to_image_query,
    to_struct,
)
from services.core.image_index import stored_query
from services.core.images import EncodedImage, ImageSource
from services.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServiceError,
    grpc_errors,
    status_of,
)
from services.metrics import INGESTED_ITEMS
from services.ranker.pictures import describe, thumbnail
from services.ranker.search import ImageSearch, Ranker, SentenceItem
from services.store import AnyOf, Equals, PayloadFilter, VersionIndex
from teran_protos.v1 import common_pb2
from teran_protos.v1 import ranker_pb2 as pb
from teran_protos.v1 import ranker_pb2_grpc as pb_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["Ranker"].full_name
DEFAULT_TOP_K = 10
"""What an unset `top_k` means (ranker.proto)."""
MAX_CONDITIONS = 64
MAX_SENTENCES = 256
ImageQueryRequest = pb.SearchSentencesRequest | pb.SearchSimilarImagesRequest
"""The requests whose `query` is an image (image, regions or image_id)."""


def to_filter(message: pb.Filter, field: str = "filter") -> PayloadFilter | None:
    if not message.must:
        return None
    if len(message.must) > MAX_CONDITIONS:
        raise InvalidArgument(field, f"{len(message.must)} conditions, at most {MAX_CONDITIONS}")
    conditions: list[Equals | AnyOf] = []
    for i, cond in enumerate(message.must):
        name = f"{field}.must[{i}]"
        check_key(cond.key, f"{name}.key")
        kind = cond.WhichOneof("match")
        if kind == "equals":
            conditions.append(Equals(cond.key, from_value(cond.equals, f"{name}.equals")))
        elif kind == "any_of":
            conditions.append(AnyOf(cond.key, from_list_value(cond.any_of, f"{name}.any_of")))
        else:
            raise InvalidArgument(name, "set equals or any_of")
    try:
        return PayloadFilter(conditions)
    except ValueError as err:
        raise InvalidArgument(field, str(err)) from err


class Expired(ServiceError):
    """The caller's deadline passed or it cancelled: the rest of the work is not done."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def deadline_check(context: grpc.ServicerContext) -> Callable[[], None]:
    """A check for the domain code to run between its expensive steps (it knows no gRPC)."""

    def check() -> None:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise Expired(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed, search stopped")
        if not context.is_active():
            raise Expired(grpc.StatusCode.CANCELLED, "cancelled by the client, search stopped")

    return check


class RankerServicer(pb_grpc.RankerServicer):
    def __init__(
        self, ranker: Ranker, images: ImageSource | None, max_payload_bytes: int = 64 << 10
    ) -> None:
        self.ranker = ranker
        self.images = images
        self.max_payload_bytes = max_payload_bytes

    @grpc_errors
    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        found = self.ranker.search(
            request.query,
            request.top_k or DEFAULT_TOP_K,
            request.offset,
            to_filter(request.filter),
            request.explain,
            check=deadline_check(context),
        )
        return image_response(found)

    def _image_query(
        self, request: ImageQueryRequest, index: VersionIndex
    ) -> tuple[EncodedImage, str | None]:
        """The request's `query` (a picture, regions or a stored image_id) encoded with
        `index`'s model version, and the stored image's id when it was one."""
        source = request.WhichOneof("query")
        if source is None:
            raise InvalidArgument("query", "set image, regions or image_id")
        if source == "image_id":
            image_id = check_id(request.image_id, "image_id")
            return stored_query(index, image_id, "image_id"), image_id
        if self.images is None:
            raise InvalidArgument("query", "this ranker has no image encoder configured")
        query, field = to_image_query(request, source, "query")
        return self.images.encode_query(query, field, index.version), None

    @grpc_errors
    def SearchSimilarImages(
        self, request: pb.SearchSimilarImagesRequest, context: grpc.ServicerContext
    ) -> pb.SearchResponse:
        index = self.ranker.store.live()
        flt = to_filter(request.filter)
        image, image_id = self._image_query(request, index)
        found = self.ranker.search_similar_images(
            image,
            index,
            request.top_k or DEFAULT_TOP_K,
            request.offset,
            flt,
            exclude=image_id,
            check=deadline_check(context),
        )
        return image_response(found)

    @grpc_errors
    def SearchSentences(
        self, request: pb.SearchSentencesRequest, context: grpc.ServicerContext
    ) -> pb.SearchSentencesResponse:
        index = self.ranker.store.live()
        check = deadline_check(context)
        flt = to_filter(request.filter)
        image, _ = self._image_query(request, index)
        results = self.ranker.search_sentences(
            image, index, request.top_k or DEFAULT_TOP_K, request.offset, flt, check
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
        """Each sentence stored or refused alone (its result says which); only a request
        that is wrong as a whole fails the call."""
        if not request.sentences:
            raise InvalidArgument("sentences", "at least one sentence is required")
        if len(request.sentences) > MAX_SENTENCES:
            raise InvalidArgument(
                "sentences", f"{len(request.sentences)} sentences, at most {MAX_SENTENCES}"
            )
        errors: list[ServiceError | None] = [None] * len(request.sentences)
        items: list[SentenceItem] = []
        positions: list[int] = []
        for i, s in enumerate(request.sentences):
            field = f"sentences[{i}]"
            try:
                payload = check_payload(s.payload, f"{field}.payload", self.max_payload_bytes)
            except ServiceError as err:
                errors[i] = err
                continue
            items.append(SentenceItem(s.id, s.text, payload, field))
            positions.append(i)
        try:
            outcome = self.ranker.ingest_sentences(items) if items else []
        except Exception as err:  # the store or the text encoder failed: nothing is stored
            outcome = [err if isinstance(err, ServiceError) else _Failed(err)] * len(items)
        for i, outcome_i in zip(positions, outcome, strict=True):
            errors[i] = outcome_i
        results = [_result(s.id, e) for s, e in zip(request.sentences, errors, strict=True)]
        return pb.IngestSentencesResponse(stored=sum(r.stored for r in results), results=results)

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

    @grpc_errors
    def GetImage(
        self, request: pb.GetImageRequest, context: grpc.ServicerContext
    ) -> pb.GetImageResponse:
        """The stored source (what was ingested), or a thumbnail of it, for display."""
        image_id = check_id(request.id, "id")
        source = self.ranker.store.get_sources("image", [image_id])[0]
        if source is None:
            raise NotFound(f"id: no stored image {image_id!r}")
        if source.image is None:
            raise FailedPrecondition(f"id: image {image_id!r} was ingested as regions, no picture")
        if request.max_side:
            picture = thumbnail(source.image, request.max_side)
        else:
            picture = describe(source.image)
        return pb.GetImageResponse(
            id=image_id,
            data=picture.data,
            content_type=picture.content_type,
            width=picture.width,
            height=picture.height,
            uri=source.uri,
            payload=to_struct(source.payload),
        )


def image_response(found: ImageSearch) -> pb.SearchResponse:
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


class _Failed(ServiceError):
    """Any other error, with the status `status_of` gives it (logged there)."""

    def __init__(self, err: BaseException) -> None:
        code, message = status_of(err)
        super().__init__(message)
        self.code = code


def _result(item_id: str, err: ServiceError | None) -> pb.SentenceResult:
    if err is None:
        INGESTED_ITEMS.labels("sentence", "stored", "OK").inc()
        return pb.SentenceResult(id=item_id, stored=True, code=0)
    INGESTED_ITEMS.labels("sentence", "failed", err.code.name).inc()
    return pb.SentenceResult(id=item_id, stored=False, code=err.code.value[0], message=err.message)
