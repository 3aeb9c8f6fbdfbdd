"""The ImageEncoder gRPC service: streaming ingestion into the store, and one-off encoding.

Ingest reads the client's stream on its own thread and processes whatever has arrived, up to a
chunk, as one model call and one store write; results go back in the order items came. An item
is acknowledged as stored only after the store's writes returned (durable), so a client that saw
`stored = true` never loses that item; a bad item fails alone and the stream goes on.

Each chunk is encoded with the live model version, read once: its source is written first (while
the model runs), then its points. If the live version changed meanwhile (an upgrade switched),
the chunk is written into the new version too, so an item acknowledged around a switch is never
missing from it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from services.convert import from_struct, to_boxes, to_matrix
from services.errors import InvalidArgument, grpc_errors, status_of
from services.image_encoder.encoding import ImageEncoding, ImageInput
from services.image_encoder.indexing import index_images, write_images
from services.metrics import INGESTED_BYTES, INGESTED_ITEMS, timed
from services.store import Source, VectorStore, new_rev
from teran.v1 import image_encoder_pb2 as pb
from teran.v1 import image_encoder_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
SERVICE = pb.DESCRIPTOR.services_by_name["ImageEncoder"].full_name
RESERVED_PREFIX = "_"
_END = object()


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
        source = request.WhichOneof("source") or ""
        encoded = self.encoding.encode_query(source, request, "request", version)
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

        def read() -> None:
            try:
                for message in request_iterator:
                    inbox.put(message)
            except Exception as err:  # the client cancelled or broke the stream
                log.debug("ingest stream ended: %s", err)
            finally:
                inbox.put(_END)

        threading.Thread(target=read, name="ingest-reader", daemon=True).start()
        index = 0
        done = False
        while not done:
            messages = [inbox.get()]
            while len(messages) < self.chunk:
                try:
                    messages.append(inbox.get_nowait())
                except queue.Empty:
                    break
            if messages[-1] is _END:
                messages.pop()
                done = True
            if messages:
                yield from self._ingest_chunk(messages, index)
                index += len(messages)

    def _ingest_chunk(self, messages: list[pb.IngestItem], first: int) -> list[pb.IngestResult]:
        results: list[pb.IngestResult | None] = [None] * len(messages)
        try:
            index = self.store.live()
            version = index.version
        except Exception as err:  # the store is down: every item fails, the stream goes on
            return [_failure(m.id, err) for m in messages]
        accepted: list[tuple[int, ImageInput, Source]] = []
        for k, message in enumerate(messages):
            field = f"items[{first + k}]"
            try:
                if not message.id or len(message.id) > 256:
                    raise InvalidArgument(f"{field}.id", "ids must be 1..256 characters")
                payload = from_struct(message.payload)
                bad = [key for key in payload if key.startswith(RESERVED_PREFIX)]
                if bad:
                    raise InvalidArgument(f"{field}.payload", f"reserved key {bad[0]!r}")
                kind = message.WhichOneof("source") or ""
                item = self.encoding.read(kind, message, field, version)
                source = Source(
                    message.id,
                    "image",
                    new_rev(),
                    image=item.data,
                    features=item.features,
                    boxes=item.boxes,
                    uri=message.uri,
                    payload=payload,
                )
                accepted.append((k, item, source))
            except Exception as err:
                results[k] = _failure(message.id, err)
        if accepted:
            inputs = [item for _, item, _ in accepted]
            sources = [source for _, _, source in accepted]
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
                for (k, item, _), e in zip(accepted, encoded, strict=True):
                    results[k] = pb.IngestResult(
                        id=messages[k].id, stored=True, code=0, regions=len(e.regions)
                    )
                    INGESTED_ITEMS.labels("stored").inc()
                    INGESTED_BYTES.inc(item.size_bytes)
            except Exception as err:  # model or store failed: none of these items is acked
                for k, _, _ in accepted:
                    results[k] = _failure(messages[k].id, err)
        return [r for r in results if r is not None]

    def close(self) -> None:
        self._sources.shutdown(wait=True)

    def _put_sources(self, sources: list[Source]) -> None:
        with timed("store", "put_sources"):
            self.store.put_sources(sources)


def _failure(item_id: str, err: BaseException) -> pb.IngestResult:
    code, message = status_of(err)
    INGESTED_ITEMS.labels("failed").inc()
    return pb.IngestResult(id=item_id, stored=False, code=code.value[0], message=message)
