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
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from teran_client.channels import ChannelSecurity, open_channel
from teran_client.messages import (  # noqa: F401 - folder_items, to_filter: part of this API
    IMAGE_EXTENSIONS,
    folder_items,
    from_alignment,
    from_struct,
    image_query_request,
    ingest_result,
    search_request,
    search_result,
    sentence_batches,
    sentence_results,
    sentence_search_result,
    stats_of,
    to_filter,
    to_ingest_item,
    to_regions,
    to_struct,
)
from teran_client.results import (  # noqa: F401 - re-exported: the client's results
    Box,
    DeleteResult,
    FilterSpec,
    ImageHit,
    IngestResult,
    Item,
    SearchResult,
    SentenceHit,
    SentenceSearchResult,
    Stats,
    TeranError,
    WordAlignment,
)
from teran_protos.v1 import image_encoder_pb2 as ie_pb
from teran_protos.v1 import image_encoder_pb2_grpc as ie_grpc
from teran_protos.v1 import ranker_pb2 as rk_pb
from teran_protos.v1 import ranker_pb2_grpc as rk_grpc

MAX_MESSAGE_BYTES = 32 << 20
"""Matches the server's default `max_message_mb`: a 16 MiB image plus its envelope fits."""
SENTENCES_PER_REQUEST = 256
"""The server's limit per IngestSentences request; larger batches are split here."""


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
                        message = to_ingest_item(item)
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
                yield ingest_result(response)
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
        request = search_request(query, top_k, offset, filter, explain)
        return search_result(self._call(self._ranker.Search, request))

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
        request = image_query_request(
            rk_pb.SearchSentencesRequest, image, image_id, regions, top_k, offset, filter
        )
        return sentence_search_result(self._call(self._ranker.SearchSentences, request))

    def search_similar_images(
        self,
        image: bytes | None = None,
        image_id: str | None = None,
        regions: tuple[np.ndarray, np.ndarray] | None = None,
        top_k: int = 10,
        offset: int = 0,
        filter: FilterSpec | None = None,
    ) -> SearchResult:
        """Images like an image (encoded bytes, a stored image's id, or precomputed regions),
        best first: for every query region its best stored region, summed. A stored image is
        not among its own hits; the result has no words and its hits no alignment."""
        request = image_query_request(
            rk_pb.SearchSimilarImagesRequest, image, image_id, regions, top_k, offset, filter
        )
        return search_result(self._call(self._ranker.SearchSimilarImages, request))

    # --- collection management -----------------------------------------------------------

    def ingest_sentences(
        self, sentences: Iterable[tuple[str, str] | tuple[str, str, Mapping[str, Any]]]
    ) -> list[IngestResult]:
        """Add (id, text[, payload]) sentences, in requests of at most 256: one result per
        sentence, in order; a bad sentence fails alone (its result says why)."""
        results: list[IngestResult] = []
        for request in sentence_batches(sentences, SENTENCES_PER_REQUEST):
            results += sentence_results(self._call(self._ranker.IngestSentences, request))
        return results

    def delete(
        self, image_ids: Iterable[str] = (), sentence_ids: Iterable[str] = ()
    ) -> DeleteResult:
        """Remove images and/or sentences; unknown ids come back in `not_found`."""
        request = rk_pb.DeleteRequest(image_ids=list(image_ids), sentence_ids=list(sentence_ids))
        response = self._call(self._ranker.Delete, request)
        return DeleteResult(int(response.deleted), list(response.not_found))

    def stats(self) -> Stats:
        return stats_of(self._call(self._ranker.Stats, rk_pb.StatsRequest()))

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
