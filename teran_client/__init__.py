"""Client library of the TERAN retrieval platform: typed calls over its gRPC API.

`TeranClient` ingests images (streamed, flow-controlled), searches images with sentences and
sentences with images, and manages the collections; failures raise `TeranError`.
"""

from teran_client.aio import AsyncTeranClient
from teran_client.channels import ChannelSecurity
from teran_client.client import (
    Box,
    DeleteResult,
    ImageHit,
    IngestResult,
    Item,
    SearchResult,
    SentenceHit,
    SentenceSearchResult,
    Stats,
    TeranClient,
    TeranError,
    WordAlignment,
    folder_items,
    to_filter,
)

__all__ = [
    "AsyncTeranClient",
    "Box",
    "ChannelSecurity",
    "DeleteResult",
    "ImageHit",
    "IngestResult",
    "Item",
    "SearchResult",
    "SentenceHit",
    "SentenceSearchResult",
    "Stats",
    "TeranClient",
    "TeranError",
    "WordAlignment",
    "folder_items",
    "to_filter",
]
