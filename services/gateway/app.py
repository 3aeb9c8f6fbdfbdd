"""The HTTP/JSON API: one route per public RPC, JSON <-> proto one to one, and the page.

A route parses its checked JSON body into the request message, calls the gRPC service with the
caller's `Authorization` header as metadata (the same keys and roles apply), and answers the
response message as JSON, or the gRPC status as an HTTP status with a body naming the field.
Uploads (multipart) and the picture routes are the same RPCs with the image as a file or the
answer as the picture itself. Nothing is searched here: the gRPC services do all of it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

import grpc
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.gateway.errors import (
    Error,
    error_response,
    from_rpc_error,
    validation_response,
)
from services.gateway.schema import from_proto, model_for, to_proto
from teran_protos.v1 import image_encoder_pb2 as ie_pb
from teran_protos.v1 import image_encoder_pb2_grpc as ie_grpc
from teran_protos.v1 import ranker_pb2 as rk_pb
from teran_protos.v1 import ranker_pb2_grpc as rk_grpc

STATIC = resources.files("services.gateway") / "static"
OPENAPI_PATH = "/openapi.json"
THUMBNAIL_SIDE = 256
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Error, "description": text}
    for status, text in (
        (400, "INVALID_ARGUMENT / FAILED_PRECONDITION: the message names the field"),
        (401, "UNAUTHENTICATED: no API key, or an unknown one"),
        (403, "PERMISSION_DENIED: the key lacks the method's role"),
        (404, "NOT_FOUND"),
        (413, "RESOURCE_EXHAUSTED: the body or an image is too large"),
        (429, "RESOURCE_EXHAUSTED: a rate or concurrency limit"),
        (503, "UNAVAILABLE: the gRPC service cannot be reached"),
    )
}


@dataclass(frozen=True)
class Rpc:
    """One RPC's route (google.api.http style)."""

    path: str
    verb: str
    service: str
    method: str
    request: type[Message]
    response: type[Message]
    summary: str


ROUTES: tuple[Rpc, ...] = (
    Rpc("/v1/search", "POST", "Ranker", "Search", rk_pb.SearchRequest, rk_pb.SearchResponse,
        "Images for a sentence, best first (explain: each query word's best region)"),
    Rpc("/v1/search-sentences", "POST", "Ranker", "SearchSentences",
        rk_pb.SearchSentencesRequest, rk_pb.SearchSentencesResponse,
        "Sentences for an image: a stored image_id, image bytes (base64) or regions"),
    Rpc("/v1/search-similar-images", "POST", "Ranker", "SearchSimilarImages",
        rk_pb.SearchSimilarImagesRequest, rk_pb.SearchResponse,
        "Images like an image (a stored image_id, left out of the hits; image bytes or regions)"),
    Rpc("/v1/sentences", "POST", "Ranker", "IngestSentences", rk_pb.IngestSentencesRequest,
        rk_pb.IngestSentencesResponse, "Add sentences (one result per sentence)"),
    Rpc("/v1/delete", "POST", "Ranker", "Delete", rk_pb.DeleteRequest, rk_pb.DeleteResponse,
        "Remove images and/or sentences by id"),
    Rpc("/v1/stats", "GET", "Ranker", "Stats", rk_pb.StatsRequest, rk_pb.StatsResponse,
        "Collection sizes and the live model version"),
    Rpc("/v1/get-image", "POST", "Ranker", "GetImage", rk_pb.GetImageRequest,
        rk_pb.GetImageResponse, "A stored image's source or thumbnail (base64) with its payload"),
    Rpc("/v1/images", "POST", "ImageEncoder", "Ingest", ie_pb.IngestItem, ie_pb.IngestResult,
        "Ingest one image (the Ingest stream with one item)"),
    Rpc("/v1/encode-image", "POST", "ImageEncoder", "EncodeImage", ie_pb.EncodeImageRequest,
        ie_pb.EncodeImageResponse, "Region embeddings of an image, without storing it"),
)  # fmt: skip
"""Every public RPC's JSON route; the upload and picture routes below reuse these RPCs."""


class Upstream:
    """The gRPC stubs, and calls that carry the caller's key and a deadline."""

    def __init__(self, ranker: grpc.Channel, images: grpc.Channel, timeout_s: float) -> None:
        self.stubs: dict[str, Any] = {
            "Ranker": rk_grpc.RankerStub(ranker),
            "ImageEncoder": ie_grpc.ImageEncoderStub(images),
        }
        self.health = health_pb2_grpc.HealthStub(ranker)
        self.timeout_s = timeout_s

    def call(self, rpc: Rpc, message: Message, request: Request) -> Any:
        """The RPC's response message; grpc.RpcError as raised."""
        metadata = []
        auth = request.headers.get("authorization")
        if auth:
            metadata.append(("authorization", auth))
        method = getattr(self.stubs[rpc.service], rpc.method)
        if rpc.method == "Ingest":  # a stream of one item, answered by one result
            return next(iter(method(iter([message]), timeout=self.timeout_s, metadata=metadata)))
        return method(message, timeout=self.timeout_s, metadata=metadata)


def _answer(upstream: Upstream, rpc: Rpc, message: Message, request: Request) -> Any:
    try:
        response = upstream.call(rpc, message, request)
    except grpc.RpcError as err:
        return from_rpc_error(err)
    if isinstance(response, ie_pb.IngestResult) and response.code != 0:
        return error_response(_code(response.code), response.message)
    return from_proto(response)


def _code(value: int) -> grpc.StatusCode:
    return next((s for s in grpc.StatusCode if s.value[0] == value), grpc.StatusCode.UNKNOWN)


def _json_route(app: FastAPI, upstream: Upstream, rpc: Rpc) -> None:
    body_model = model_for(rpc.request.DESCRIPTOR)

    def endpoint(request: Request, body: Any = None) -> Any:
        return _answer(upstream, rpc, to_proto(body, rpc.request), request)

    params = [inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request)]
    if rpc.verb == "POST":
        params.append(
            inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=body_model)
        )
    endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    app.add_api_route(
        rpc.path,
        endpoint,
        methods=[rpc.verb],
        response_model=model_for(rpc.response.DESCRIPTOR),
        summary=rpc.summary,
        description=f"`teran.v1.{rpc.service}/{rpc.method}`",
        operation_id=f"{rpc.service}.{rpc.method}",
        responses=ERRORS,
        tags=[rpc.service],
    )


def _rpc(service: str, method: str) -> Rpc:
    return next(r for r in ROUTES if r.service == service and r.method == method)


def _merge_form(text: str, target: Message, field: str) -> Response | None:
    """A JSON object sent as a form field (multipart cannot nest) into `target`; a 400
    naming `field` when it is not one."""
    if not text:
        return None
    try:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("a JSON object is required")
        json_format.ParseDict(value, target)
    except (ValueError, json_format.ParseError) as err:
        return error_response(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {err}", field)
    return None


def _upload_routes(app: FastAPI, upstream: Upstream, max_upload_bytes: int) -> None:
    async def read(file: UploadFile) -> bytes | Response:
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            return error_response(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"image: more than gateway.max_upload_bytes ({max_upload_bytes} bytes)",
            )
        return data

    @app.post(
        "/v1/images:upload",
        response_model=model_for(ie_pb.IngestResult.DESCRIPTOR),
        responses=ERRORS,
        tags=["ImageEncoder"],
        summary="Ingest one uploaded image (multipart: image, id, uri, payload as JSON)",
        operation_id="ImageEncoder.Ingest.upload",
    )
    async def ingest_upload(
        request: Request,
        image: Annotated[UploadFile, File()],
        id: Annotated[str, Form()],
        uri: Annotated[str, Form()] = "",
        payload: Annotated[str, Form(description="a JSON object")] = "",
    ) -> Any:
        data = await read(image)
        if isinstance(data, Response):
            return data
        item = ie_pb.IngestItem(id=id, image=data, uri=uri)
        refused = _merge_form(payload, item.payload, "payload")
        if refused is not None:
            return refused
        return await _threaded(_answer, upstream, _rpc("ImageEncoder", "Ingest"), item, request)

    for method, summary in (
        ("SearchSentences", "Sentences for an uploaded image"),
        ("SearchSimilarImages", "Images like an uploaded image"),
    ):
        _image_query_upload(app, upstream, read, _rpc("Ranker", method), summary)


def _image_query_upload(
    app: FastAPI,
    upstream: Upstream,
    read: Callable[[UploadFile], Awaitable[bytes | Response]],
    rpc: Rpc,
    summary: str,
) -> None:
    """`rpc.path:upload`: an RPC whose query is an image, with the image as a file."""

    async def upload(
        request: Request,
        image: Annotated[UploadFile, File()],
        top_k: Annotated[int, Form(ge=0)] = 0,
        offset: Annotated[int, Form(ge=0)] = 0,
        filter: Annotated[str, Form(description="a Filter as JSON")] = "",
    ) -> Any:
        data = await read(image)
        if isinstance(data, Response):
            return data
        message = rpc.request(image=data, top_k=top_k, offset=offset)
        refused = _merge_form(filter, message.filter, "filter")
        if refused is not None:
            return refused
        return await _threaded(_answer, upstream, rpc, message, request)

    app.add_api_route(
        f"{rpc.path}:upload",
        upload,
        methods=["POST"],
        response_model=model_for(rpc.response.DESCRIPTOR),
        responses=ERRORS,
        tags=[rpc.service],
        summary=f"{summary} (multipart: image, top_k, offset, filter)",
        operation_id=f"{rpc.service}.{rpc.method}.upload",
    )


def _picture_routes(app: FastAPI, upstream: Upstream) -> None:
    rpc = _rpc("Ranker", "GetImage")

    def picture(request: Request, image_id: str, max_side: int) -> Response:
        message = rk_pb.GetImageRequest(id=image_id, max_side=max_side)
        try:
            answer = upstream.call(rpc, message, request)
        except grpc.RpcError as err:
            return from_rpc_error(err)
        return Response(
            answer.data,
            media_type=answer.content_type,
            headers={"Cache-Control": "private, max-age=60"},
        )

    pictures = {"content": {"image/*": {}}, "description": "the picture"}

    @app.get(
        "/v1/images/{image_id:path}/source",
        response_class=Response,
        responses={200: pictures, **ERRORS},
        tags=["Ranker"],
        summary="The picture as ingested (GetImage, max_side 0)",
        operation_id="Ranker.GetImage.source",
    )
    def source(request: Request, image_id: str) -> Response:
        return picture(request, image_id, 0)

    @app.get(
        "/v1/images/{image_id:path}/thumbnail",
        response_class=Response,
        responses={200: pictures, **ERRORS},
        tags=["Ranker"],
        summary="A JPEG thumbnail (GetImage with max_side)",
        operation_id="Ranker.GetImage.thumbnail",
    )
    def thumbnail(
        request: Request, image_id: str, max_side: Annotated[int, Query(ge=0)] = THUMBNAIL_SIDE
    ) -> Response:
        return picture(request, image_id, max_side)


async def _threaded(function: Callable[..., Any], *args: Any) -> Any:
    """A blocking gRPC call off the event loop (FastAPI's own thread pool)."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args)


def create_app(upstream: Upstream, max_upload_bytes: int) -> FastAPI:
    """The gateway's routes, the OpenAPI document at /openapi.json and the search page at /."""
    app = FastAPI(
        title="TERAN retrieval API",
        version="v1",
        description="HTTP/JSON over the teran.v1 gRPC API: proto3 JSON with the proto's field "
        "names; send API keys as `Authorization: Bearer <key>`.",
        openapi_url=OPENAPI_PATH,
        docs_url="/docs",
        redoc_url=None,
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(list(exc.errors()))

    @app.exception_handler(json_format.ParseError)
    async def _unparsable(request: Request, exc: json_format.ParseError) -> JSONResponse:
        return error_response(grpc.StatusCode.INVALID_ARGUMENT, f"body: {exc}", "body")

    for rpc in ROUTES:
        _json_route(app, upstream, rpc)
    _upload_routes(app, upstream, max_upload_bytes)
    _picture_routes(app, upstream)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        try:
            answer = upstream.health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            serving = answer.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            serving = False
        return JSONResponse({"serving": serving}, status_code=200 if serving else 503)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app
