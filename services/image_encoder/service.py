"""The ImageEncoder gRPC service: streaming ingestion into the store, and one-off encoding.

Ingest reads the client's stream on its own thread and processes whatever has arrived, up to a
chunk, as one model call and one store write; results go back in the order items came. An item
is acknowledged as stored only after the store's writes returned (durable), so a client that saw
`stored = true` never loses that item; a bad item fails alone and the stream goes on. Every
item is checked before anything of its chunk is written, so a refused one leaves nothing; an id
twice in a chunk (a retry) is stored once, the later item. A chunk holds at most `chunk` items
and `max_chunk_pixels` decoded pixels (read from the headers first): decoded pictures are what
takes memory. Once the client cancels or its deadline passes, nothing more is read or encoded.

Each chunk is encoded with the live model version, read once: its source is written first (while
the model runs), then its points. If the live version changed meanwhile (an upgrade switched),
the chunk is written into the new version too, so an item acknowledged around a switch is never
missing from it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc

from services.convert import check_id, check_payload, to_boxes, to_image_query, to_matrix
from services.core.image_index import index_images, write_images
from services.core.images import ImageEncoding, ImageInput, Picture, Regions
from services.errors import InvalidArgument, grpc_errors, status_of
from services.metrics import INGESTED_BYTES, INGESTED_ITEMS, timed
from services.store import Source, VectorStore, new_rev
from teran_protos.v1 import image_encoder_pb2 as pb
from teran_protos.v1 import image_encoder_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
SERVICE = pb.DESCRIPTOR.services_by_name["ImageEncoder"].full_name
_END = object()
T = TypeVar("T")


class ImageEncoderServicer(pb_grpc.ImageEncoderServicer):
    def __init__(
        self,
        encoding: ImageEncoding,
        store: VectorStore,
        chunk: int = 16,
        max_in_flight: int = 512,
    ) -> None:
        self.encoding = encoding
        self.store = store
        self.chunk = chunk
        self.max_in_flight = max_in_flight
        self._sources = ThreadPoolExecutor(4, thread_name_prefix="ingest-sources")
        """Writes sources while the model encodes the same chunk (the two waits overlap)."""

    @grpc_errors
    def EncodeImage(
        self, request: pb.EncodeImageRequest, context: grpc.ServicerContext
    ) -> pb.EncodeImageResponse:
        version = request.model_version or self.store.live_version()
        query, field = to_image_query(request, request.WhichOneof("source"), "request")
        encoded = self.encoding.encode_query(query, field, version)
        return pb.EncodeImageResponse(
            regions=to_matrix(encoded.regions),
            boxes=to_boxes(encoded.boxes),
            model_version=version,
            **{"global": to_matrix(encoded.global_vector[None])},
        )

    def Ingest(
        self, request_iterator: Iterator[pb.IngestItem], context: grpc.ServicerContext
    ) -> Iterator[pb.IngestResult]:
        inbox: queue.Queue[Any] = queue.Queue(maxsize=self.max_in_flight)
        stopped = threading.Event()

        def offer(item: Any) -> bool:
            """Put `item` in the inbox unless the stream stopped (never blocks for good)."""
            while not stopped.is_set():
                try:
                    inbox.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    continue
            return False

        def read() -> None:
            try:
                for message in request_iterator:
                    if not offer(message):
                        return
            except Exception as err:  # the client cancelled or broke the stream
                log.debug("ingest stream ended: %s", err)
            offer(_END)

        threading.Thread(target=read, name="ingest-reader", daemon=True).start()
        cfg = self.encoding.cfg
        index, held, done = 0, None, False
        try:
            while not done and context.is_active():
                first = held if held is not None else inbox.get()
                messages, held = gather(
                    first, lambda: _poll(inbox), self._pixels, self.chunk, cfg.max_chunk_pixels
                )
                if messages[-1] is _END:
                    messages.pop()
                    done = True
                if messages and context.is_active():  # the caller is gone: nothing more is done
                    yield from self._ingest_chunk(messages, index, context.is_active)
                    index += len(messages)
        finally:
            stopped.set()

    def _pixels(self, message: Any) -> int:
        if message is _END or message.WhichOneof("source") != "image":
            return 0
        return self.encoding.pixels(message.image)

    def _check(self, message: pb.IngestItem, field: str, version: str) -> tuple[ImageInput, Source]:
        """Everything the store would refuse, refused here, before anything is written."""
        cfg = self.encoding.cfg
        check_id(message.id, f"{field}.id")
        if len(message.uri) > cfg.max_uri_chars:
            raise InvalidArgument(
                f"{field}.uri", f"{len(message.uri)} characters, at most {cfg.max_uri_chars}"
            )
        payload = check_payload(message.payload, f"{field}.payload", cfg.max_payload_bytes)
        query, name = to_image_query(message, message.WhichOneof("source"), field)
        item = self.encoding.check(query, name, version)
        regions = item if isinstance(item, Regions) else None
        source = Source(
            message.id,
            "image",
            new_rev(),
            image=item.data if isinstance(item, Picture) else None,
            features=regions.features if regions else None,
            boxes=regions.boxes if regions else None,
            uri=message.uri,
            payload=payload,
        )
        return item, source

    def _ingest_chunk(
        self,
        messages: list[pb.IngestItem],
        first: int,
        active: Callable[[], bool] = lambda: True,
    ) -> list[pb.IngestResult]:
        """Results of the items of one chunk: the checked ones encoded in one model call and
        written; none once `active` says the caller is gone (checked before encoding)."""
        results: list[pb.IngestResult | None] = [None] * len(messages)
        try:
            index = self.store.live()
            version = index.version
        except Exception as err:  # the store is down: every item fails, the stream goes on
            return [_failure(m.id, err) for m in messages]
        accepted: dict[str, tuple[int, ImageInput, Source]] = {}
        superseded: dict[int, str] = {}
        for k, message in enumerate(messages):
            try:
                item, source = self._check(message, f"items[{first + k}]", version)
            except Exception as err:
                results[k] = _failure(message.id, err)
                continue
            if message.id in accepted:  # a retry within the chunk: the later one is stored
                superseded[accepted.pop(message.id)[0]] = message.id
            accepted[message.id] = (k, item, source)
        if not accepted or not active():
            return [r for r in results if r is not None]
        chosen = list(accepted.values())
        inputs = [item for _, item, _ in chosen]
        sources = [source for _, _, source in chosen]
        try:
            written = self._sources.submit(self._put_sources, sources)
            try:
                encoded = self.encoding.encode(inputs, version)
            finally:
                written.result()  # sources before points, even when encoding failed
            write_images(index, sources, encoded)
            live = self.store.switched_from(version)
            if live is not None:
                index_images(self.encoding, live, sources, inputs)
        except Exception as err:  # model or store failed: none of these items is acked
            for k in [k for k, _, _ in chosen] + list(superseded):
                results[k] = _failure(messages[k].id, err)
            return [r for r in results if r is not None]
        regions = {}
        for (k, item, _), e in zip(chosen, encoded, strict=True):
            regions[messages[k].id] = len(e.regions)
            INGESTED_BYTES.inc(item.size_bytes)
        for k in [k for k, _, _ in chosen] + list(superseded):
            item_id = messages[k].id
            results[k] = pb.IngestResult(id=item_id, stored=True, code=0, regions=regions[item_id])
            INGESTED_ITEMS.labels("image", "stored", "OK").inc()
        return [r for r in results if r is not None]

    def close(self) -> None:
        self._sources.shutdown(wait=True)

    def _put_sources(self, sources: list[Source]) -> None:
        with timed("store", "put_sources"):
            self.store.put_sources(sources)


def _failure(item_id: str, err: BaseException) -> pb.IngestResult:
    code, message = status_of(err)
    INGESTED_ITEMS.labels("image", "failed", code.name).inc()
    return pb.IngestResult(id=item_id, stored=False, code=code.value[0], message=message)


def gather(
    first: T, poll: Callable[[], T | None], cost: Callable[[T], int], max_items: int, budget: int
) -> tuple[list[T], T | None]:
    """One chunk: `first`, then what `poll` has ready, up to `max_items` and a total `cost`
    within `budget` (the first item always goes). Returns the chunk and the item that did not
    fit (it starts the next chunk; it is not failed)."""
    chunk, used = [first], cost(first)
    while len(chunk) < max_items:
        item = poll()
        if item is None:
            break
        spend = cost(item)
        if used + spend > budget:
            return chunk, item
        chunk.append(item)
        used += spend
    return chunk, None


def _poll(inbox: queue.Queue[Any]) -> Any:
    try:
        return inbox.get_nowait()
    except queue.Empty:
        return None
