"""The client for asyncio applications (grpc.aio): the same calls and typed results as
`TeranClient`, for a process that serves many users at once without a thread per call.

    async with AsyncTeranClient("127.0.0.1:50051", api_key=key) as client:
        result = await client.search("a red bus", top_k=5, explain=True)
        async for item in client.ingest(items):
            ...
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any

import grpc
import grpc.aio
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from teran_client.channels import ChannelSecurity
from teran_client.client import MAX_MESSAGE_BYTES, SENTENCES_PER_REQUEST
from teran_client.messages import (
    image_query_request,
    ingest_result,
    search_request,
    search_result,
    sentence_batches,
    sentence_results,
    sentence_search_result,
    stats_of,
    to_ingest_item,
)
from teran_client.results import (
    DeleteResult,
    FilterSpec,
    IngestResult,
    Item,
    SearchResult,
    SentenceSearchResult,
    Stats,
    TeranError,
)
from teran_protos.v1 import image_encoder_pb2 as ie_pb
from teran_protos.v1 import image_encoder_pb2_grpc as ie_grpc
from teran_protos.v1 import ranker_pb2 as rk_pb
from teran_protos.v1 import ranker_pb2_grpc as rk_grpc


class AsyncTeranClient:
    """One grpc.aio channel to a server; unary calls use `timeout_s` as their deadline."""

    def __init__(
        self,
        address: str,
        timeout_s: float = 30.0,
        *,
        api_key: str | None = None,
        security: ChannelSecurity | None = None,
    ) -> None:
        security = security or ChannelSecurity()
        if api_key is not None:
            security = dataclasses.replace(security, api_key=api_key)
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        if security.server_name:
            options.append(("grpc.ssl_target_name_override", security.server_name))
        self._channel = (
            grpc.aio.secure_channel(address, security.credentials(), options=options)
            if security.uses_tls
            else grpc.aio.insecure_channel(address, options=options)
        )
        self._metadata = (
            (("authorization", f"Bearer {security.api_key}"),) if security.api_key else ()
        )
        self.address, self.timeout_s = address, timeout_s
        self._images = ie_grpc.ImageEncoderStub(self._channel)
        self._ranker = rk_grpc.RankerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncTeranClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as err:
            raise TeranError.from_rpc(err) from None

    async def search(
        self,
        query: str,
        top_k: int = 10,
        offset: int = 0,
        filter: FilterSpec | None = None,
        explain: bool = False,
    ) -> SearchResult:
        request = search_request(query, top_k, offset, filter, explain)
        return search_result(await self._call(self._ranker.Search, request))

    async def search_sentences(
        self,
        image: bytes | None = None,
        image_id: str | None = None,
        regions: tuple[np.ndarray, np.ndarray] | None = None,
        top_k: int = 10,
        offset: int = 0,
        filter: FilterSpec | None = None,
    ) -> SentenceSearchResult:
        request = image_query_request(
            rk_pb.SearchSentencesRequest, image, image_id, regions, top_k, offset, filter
        )
        return sentence_search_result(await self._call(self._ranker.SearchSentences, request))

    async def search_similar_images(
        self,
        image: bytes | None = None,
        image_id: str | None = None,
        regions: tuple[np.ndarray, np.ndarray] | None = None,
        top_k: int = 10,
        offset: int = 0,
        filter: FilterSpec | None = None,
    ) -> SearchResult:
        request = image_query_request(
            rk_pb.SearchSimilarImagesRequest, image, image_id, regions, top_k, offset, filter
        )
        return search_result(await self._call(self._ranker.SearchSimilarImages, request))

    async def ingest(
        self, items: Iterable[Item] | AsyncIterable[Item]
    ) -> AsyncIterator[IngestResult]:
        """One result per item, in order; an item that cannot be sent fails alone."""
        order: collections.deque[IngestResult | None] = collections.deque()
        """Per item sent or refused here: None (the server answers it) or its failure."""

        async def requests() -> AsyncIterator[ie_pb.IngestItem]:
            async for item in _aiter(items):
                try:
                    message = to_ingest_item(item)
                except (ValueError, OSError) as err:
                    order.append(IngestResult(item.id, False, 3, f"client: {err}"))
                    continue
                order.append(None)
                yield message

        call = self._images.Ingest(requests(), metadata=self._metadata)
        try:
            async for response in call:
                while order and order[0] is not None:
                    failed = order.popleft()
                    assert failed is not None
                    yield failed
                if order:
                    order.popleft()
                yield ingest_result(response)
        except grpc.RpcError as err:
            raise TeranError.from_rpc(err) from None
        for failed in order:
            if failed is not None:
                yield failed

    async def ingest_sentences(
        self, sentences: Iterable[tuple[str, str] | tuple[str, str, Mapping[str, Any]]]
    ) -> list[IngestResult]:
        results: list[IngestResult] = []
        for request in sentence_batches(sentences, SENTENCES_PER_REQUEST):
            results += sentence_results(await self._call(self._ranker.IngestSentences, request))
        return results

    async def delete(
        self, image_ids: Iterable[str] = (), sentence_ids: Iterable[str] = ()
    ) -> DeleteResult:
        request = rk_pb.DeleteRequest(image_ids=list(image_ids), sentence_ids=list(sentence_ids))
        response = await self._call(self._ranker.Delete, request)
        return DeleteResult(int(response.deleted), list(response.not_found))

    async def stats(self) -> Stats:
        return stats_of(await self._call(self._ranker.Stats, rk_pb.StatsRequest()))

    async def health(self, service: str = "") -> bool:
        try:
            response = await self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=min(self.timeout_s, 5.0)
            )
        except grpc.RpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    async def wait_ready(self, timeout: float = 30.0, interval: float = 0.2) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self.health():
            if loop.time() > deadline:
                raise TeranError(grpc.StatusCode.UNAVAILABLE, f"{self.address} not SERVING")
            await asyncio.sleep(interval)


async def _aiter(items: Iterable[Item] | AsyncIterable[Item]) -> AsyncIterator[Item]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
