"""What the client returns and raises: plain dataclasses and one exception type, so an
application never handles proto messages or `grpc.RpcError`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import numpy as np

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
