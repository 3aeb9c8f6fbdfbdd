"""A small typed client of the TERAN platform's public gRPC API.

Callers get dataclasses and one exception type (`TeranError`) instead of proto messages and
`grpc.RpcError`, so an application never imports the generated code. Ingestion streams with a
bounded window of unacknowledged items: memory stays flat however large the collection, and a
bad item fails alone (its result says why) while the stream goes on.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import numpy as np
from google.protobuf import json_format, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from teran.v1 import common_pb2
from teran.v1 import image_encoder_pb2 as ie_pb
from teran.v1 import image_encoder_pb2_grpc as ie_grpc
from teran.v1 import ranker_pb2 as rk_pb
from teran.v1 import ranker_pb2_grpc as rk_grpc
from teran_client.channels import ChannelSecurity, open_channel

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
)
"""File name endings `ingest_folder` treats as images (case-insensitive)."""
MAX_MESSAGE_BYTES = 32 << 20
"""Matches the server's default `max_message_mb`: a 16 MiB image plus its envelope fits."""
SENTENCES_PER_REQUEST = 256
"""The server's limit per IngestSentences request; larger batches are split here."""

Scalar = str | int | float | bool
FilterSpec = Mapping[str, Scalar | Sequence[Scalar]]
"""key -> value (equals) or list of values (any of them); every key must match (AND)."""


class TeranError(Exception):
    """A failed call: the gRPC status code and the server's message (which names the field)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc(cls, err: grpc.RpcError) -> TeranError:
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = err.details() if hasattr(err, "details") else str(err)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "")


def _status_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return str(status.name)
    return str(code)


class Box(NamedTuple):
    """Fractions of the image width and height, (0, 0) top left."""

    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class Item:
    """One image to ingest: exactly one of `image` (encoded bytes), `path` (a file to read) or
    `regions` ((features [R, F], boxes [R, 4]) precomputed)."""

    id: str
    image: bytes | None = None
    path: Path | None = None
    regions: tuple[np.ndarray, np.ndarray] | None = None
    uri: str = ""
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestResult:
    """The server's answer for one item; `code` is a gRPC status code (0 = OK)."""

    id: str
    stored: bool
    code: int = 0
    message: str = ""
    regions: int = 0

    @property
    def status(self) -> str:
        """The status code's name, e.g. INVALID_ARGUMENT."""
        return _status_name(self.code)


@dataclass(frozen=True)
class WordAlignment:
    """One term of the MrSw score: a query word and the region it matched best."""

    word: str
    region: int
    box: Box
    similarity: float


@dataclass(frozen=True)
class ImageHit:
    id: str
    score: float
    uri: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    alignment: list[WordAlignment] = field(default_factory=list)


@dataclass(frozen=True)
class SearchResult:
    hits: list[ImageHit]
    words: list[str]
    """The query tokens that took part in the alignment (the alignment lists follow them)."""
    model_version: str = ""


@dataclass(frozen=True)
class SentenceHit:
    id: str
    text: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SentenceSearchResult:
    hits: list[SentenceHit]
    model_version: str = ""


@dataclass(frozen=True)
class DeleteResult:
    deleted: int
    not_found: list[str]


@dataclass(frozen=True)
class Stats:
    images: int
    sentences: int
    model_version: str
    image_collection: str
    sentence_collection: str


# --- conversions -------------------------------------------------------------------------


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(dict(values))
    return out


def _from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    return dict(json_format.MessageToDict(struct))


def _value(value: Scalar) -> struct_pb2.Value:
    holder = _struct({"v": value})
    return holder.fields["v"]


def to_filter(spec: FilterSpec | None) -> rk_pb.Filter | None:
    """dict -> Filter: a scalar is `equals`, a list/tuple/set is `any_of`."""
    if not spec:
        return None
    conditions = []
    for key, value in spec.items():
        if isinstance(value, str | int | float | bool):
            conditions.append(rk_pb.Condition(key=key, equals=_value(value)))
        else:
            values = struct_pb2.ListValue()
            values.extend(list(value))
            conditions.append(rk_pb.Condition(key=key, any_of=values))
    return rk_pb.Filter(must=conditions)


def _regions(features: np.ndarray, boxes: np.ndarray) -> common_pb2.RegionFeatures:
    feats = np.ascontiguousarray(features, dtype="<f4")
    bxs = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if feats.ndim != 2:
        raise ValueError(f"region features must be 2-D [regions, dim], got shape {feats.shape}")
    return common_pb2.RegionFeatures(
        features=common_pb2.Matrix(rows=feats.shape[0], cols=feats.shape[1], data=feats.tobytes()),
        boxes=[common_pb2.Box(x1=b[0], y1=b[1], x2=b[2], y2=b[3]) for b in bxs.tolist()],
    )


def _ingest_item(item: Item) -> ie_pb.IngestItem:
    """Item -> proto, reading `path`; raises ValueError/OSError for an item that cannot be sent."""
    sources = [s for s in (item.image, item.path, item.regions) if s is not None]
    if len(sources) != 1:
        raise ValueError("set exactly one of image, path or regions")
    message = ie_pb.IngestItem(id=item.id, uri=item.uri, payload=_struct(item.payload))
    if item.regions is not None:
        message.regions.CopyFrom(_regions(*item.regions))
    elif item.image is not None:
        message.image = item.image
    elif item.path is not None:
        message.image = Path(item.path).read_bytes()
    return message


def _alignment(a: common_pb2.WordAlignment) -> WordAlignment:
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


# --- the client --------------------------------------------------------------------------


class TeranClient:
    """One channel to a server (`target all`, or the ranker and image encoder behind one address).

    Unary calls use `timeout_s` as their deadline; an ingest stream has none (it lasts as long as
    the collection), and flow control keeps at most `window` items unacknowledged.
    """

    def __init__(
        self,
        address: str,
        timeout_s: float = 30.0,
        *,
        api_key: str | None = None,
        security: ChannelSecurity | None = None,
    ) -> None:
        """`api_key` is sent as `authorization: Bearer <key>`; `security` adds TLS (and may
        carry the key instead)."""
        self.address = address
        self.timeout_s = timeout_s
        security = security or ChannelSecurity()
        if api_key is not None:
            security = dataclasses.replace(security, api_key=api_key)
        self._channel = open_channel(
            address,
            security,
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self._images = ie_grpc.ImageEncoderStub(self._channel)
        self._ranker = rk_grpc.RankerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> TeranClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise TeranError.from_rpc(err) from None

    # --- images --------------------------------------------------------------------------

    def ingest(self, items: Iterable[Item], window: int = 64) -> Iterator[IngestResult]:
        """Stream `items` in; yields one result per item, in order.

        An item that cannot even be sent (unreadable file, no or two sources) fails here with a
        client-side result and does not stop the stream. A broken stream raises TeranError.
        """
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        slots = threading.Semaphore(window)
        stop = threading.Event()
        # in send order: an id sent to the server, or a result decided here
        pending: collections.deque[str | IngestResult] = collections.deque()
        errors: list[BaseException] = []

        def requests() -> Iterator[ie_pb.IngestItem]:
            try:
                for item in items:
                    try:
                        message = _ingest_item(item)
                    except (OSError, ValueError, TypeError) as err:
                        code = grpc.StatusCode.NOT_FOUND
                        if not isinstance(err, FileNotFoundError):
                            code = grpc.StatusCode.INVALID_ARGUMENT
                        pending.append(
                            IngestResult(item.id, False, code.value[0], f"client: {err}")
                        )
                        continue
                    while not slots.acquire(timeout=0.1):
                        if stop.is_set():
                            return
                    if stop.is_set():
                        return
                    pending.append(item.id)
                    yield message
            except Exception as err:  # the caller's iterable failed: end the stream, report it
                errors.append(err)

        def decided_here() -> Iterator[IngestResult]:
            while pending and isinstance(pending[0], IngestResult):
                head = pending.popleft()
                assert isinstance(head, IngestResult)
                yield head

        call = self._images.Ingest(requests())
        try:
            for response in call:
                yield from decided_here()  # client-side failures sent before this item
                if pending:
                    pending.popleft()  # this item's id
                slots.release()
                yield IngestResult(
                    response.id, response.stored, response.code, response.message, response.regions
                )
            yield from decided_here()
        except grpc.RpcError as err:
            raise TeranError.from_rpc(err) from None
        finally:
            stop.set()
            call.cancel()  # no-op once the stream completed; frees it if the caller stopped early
        if errors:
            raise errors[0]

    def ingest_folder(
        self,
        folder: str | Path,
        payload: Mapping[str, Any] | None = None,
        window: int = 64,
        recursive: bool = True,
    ) -> Iterator[IngestResult]:
        """Ingest every image file under `folder` (see `folder_items` for ids and uris)."""
        return self.ingest(folder_items(folder, payload, recursive), window)

    # --- search --------------------------------------------------------------------------

    def search(
        self,
        query: str,
        top_k: int = 10,
        offset: int = 0,
        filter: FilterSpec | None = None,
        explain: bool = False,
    ) -> SearchResult:
        """Images for a sentence, best first; `explain` adds each query word's best region."""
        request = rk_pb.SearchRequest(query=query, top_k=top_k, offset=offset, explain=explain)
        flt = to_filter(filter)
        if flt is not None:
            request.filter.CopyFrom(flt)
        response = self._call(self._ranker.Search, request)
        return SearchResult(
            hits=[
                ImageHit(
                    id=h.id,
                    score=h.score,
                    uri=h.uri,
                    payload=_from_struct(h.payload),
                    alignment=[_alignment(a) for a in h.alignment],
                )
                for h in response.hits
            ],
            words=list(response.words),
            model_version=response.model_version,
        )

    def search_sentences(
        self,
        image: bytes | None = None,
        image_id: str | None = None,
        regions: tuple[np.ndarray, np.ndarray] | None = None,
        top_k: int = 10,
        offset: int = 0,
        filter: FilterSpec | None = None,
    ) -> SentenceSearchResult:
        """Sentences for an image: encoded bytes, a stored image's id, or precomputed regions."""
        given = [x for x in (image, image_id, regions) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of image, image_id or regions")
        request = rk_pb.SearchSentencesRequest(top_k=top_k, offset=offset)
        if image is not None:
            request.image = image
        elif image_id is not None:
            request.image_id = image_id
        else:
            assert regions is not None
            request.regions.CopyFrom(_regions(*regions))
        flt = to_filter(filter)
        if flt is not None:
            request.filter.CopyFrom(flt)
        response = self._call(self._ranker.SearchSentences, request)
        return SentenceSearchResult(
            hits=[
                SentenceHit(h.id, h.text, h.score, _from_struct(h.payload)) for h in response.hits
            ],
            model_version=response.model_version,
        )

    # --- collection management -----------------------------------------------------------

    def ingest_sentences(
        self, sentences: Iterable[tuple[str, str] | tuple[str, str, Mapping[str, Any]]]
    ) -> list[IngestResult]:
        """Add (id, text[, payload]) sentences, in requests of at most 256: one result per
        sentence, in order; a bad sentence fails alone (its result says why)."""
        batch: list[rk_pb.Sentence] = []
        results: list[IngestResult] = []
        for entry in sentences:
            sid, text = entry[0], entry[1]
            payload: Mapping[str, Any] = entry[2] if len(entry) == 3 else {}
            batch.append(rk_pb.Sentence(id=sid, text=text, payload=_struct(payload)))
            if len(batch) == SENTENCES_PER_REQUEST:
                results += self._ingest_sentence_batch(batch)
                batch = []
        if batch:
            results += self._ingest_sentence_batch(batch)
        return results

    def _ingest_sentence_batch(self, batch: list[rk_pb.Sentence]) -> list[IngestResult]:
        request = rk_pb.IngestSentencesRequest(sentences=batch)
        response = self._call(self._ranker.IngestSentences, request)
        return [IngestResult(r.id, r.stored, r.code, r.message) for r in response.results]

    def delete(
        self, image_ids: Iterable[str] = (), sentence_ids: Iterable[str] = ()
    ) -> DeleteResult:
        """Remove images and/or sentences; unknown ids come back in `not_found`."""
        request = rk_pb.DeleteRequest(image_ids=list(image_ids), sentence_ids=list(sentence_ids))
        response = self._call(self._ranker.Delete, request)
        return DeleteResult(int(response.deleted), list(response.not_found))

    def stats(self) -> Stats:
        r = self._call(self._ranker.Stats, rk_pb.StatsRequest())
        return Stats(
            int(r.images), int(r.sentences), r.model_version, r.image_collection,
            r.sentence_collection,
        )  # fmt: skip

    # --- liveness ------------------------------------------------------------------------

    def health(self, service: str = "") -> bool:
        """True when grpc.health.v1 says SERVING ("" = the whole server); False when it says
        otherwise or cannot be reached (a probe answers, it does not raise)."""
        try:
            response = self._health.Check(
                health_pb2.HealthCheckRequest(service=service),
                timeout=min(self.timeout_s, 5.0),
            )
        except grpc.RpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def wait_ready(self, timeout: float = 30.0, interval: float = 0.2) -> None:
        """Block until the server reports SERVING; TeranError(UNAVAILABLE) after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            if self.health():
                return
            if time.monotonic() >= deadline:
                raise TeranError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"server at {self.address} not serving after {timeout:g} s",
                )
            time.sleep(interval)
