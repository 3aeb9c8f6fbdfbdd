"""Proto messages <-> numpy and Python values, with the checks a public API owes its callers."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from google.protobuf import struct_pb2

from services.core.images import ImageQuery, Regions
from services.errors import InvalidArgument
from services.store.filters import RESERVED_PREFIX
from teran_protos.v1 import common_pb2


def to_matrix(array: np.ndarray) -> common_pb2.Matrix:
    array = np.ascontiguousarray(array, dtype="<f4")
    if array.ndim != 2:
        raise ValueError(f"a Matrix is 2-D, got shape {array.shape}")
    return common_pb2.Matrix(rows=array.shape[0], cols=array.shape[1], data=array.tobytes())


def from_matrix(matrix: common_pb2.Matrix, field: str) -> np.ndarray:
    """A finite float32 [rows, cols] array, or InvalidArgument naming `field`."""
    expected = matrix.rows * matrix.cols * 4
    if matrix.rows == 0 or matrix.cols == 0:
        raise InvalidArgument(field, "rows and cols must be positive")
    if len(matrix.data) != expected:
        raise InvalidArgument(
            field, f"data has {len(matrix.data)} bytes, rows x cols x 4 = {expected}"
        )
    array = np.frombuffer(matrix.data, dtype="<f4").reshape(matrix.rows, matrix.cols)
    if not np.isfinite(array).all():
        raise InvalidArgument(field, "contains NaN or infinite values")
    return array.astype(np.float32)


def to_boxes(boxes: np.ndarray) -> list[common_pb2.Box]:
    return [common_pb2.Box(x1=b[0], y1=b[1], x2=b[2], y2=b[3]) for b in boxes.tolist()]


def from_boxes(boxes: Sequence[common_pb2.Box], count: int, field: str) -> np.ndarray:
    if len(boxes) != count:
        raise InvalidArgument(field, f"{len(boxes)} boxes for {count} regions")
    array = np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes], dtype=np.float32).reshape(-1, 4)
    if not np.isfinite(array).all():
        raise InvalidArgument(field, "contains NaN or infinite values")
    bad = np.flatnonzero(
        (array < 0).any(1) | (array > 1).any(1) | (array[:, 2] <= array[:, 0])
        | (array[:, 3] <= array[:, 1])
    )  # fmt: skip
    if bad.size:
        raise InvalidArgument(f"{field}[{bad[0]}]", "needs 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")
    return array


def to_struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


MAX_ID_CHARS = 256
MAX_KEY_CHARS = 256
"""Characters of a payload or filter key."""
MAX_DEPTH = 8
"""Nesting of structs and lists in a payload or filter value (deeper is refused, not walked)."""


def check_payload(struct: struct_pb2.Struct, field: str, max_bytes: int) -> dict[str, Any]:
    """A caller's payload as a dict, refused (naming `field`) when larger than `max_bytes`
    serialized, with a reserved, empty, overlong or control-character key, or a value the
    store cannot hold."""
    size = struct.ByteSize()
    if size > max_bytes:
        raise InvalidArgument(field, f"{size} bytes serialized, at most {max_bytes}")
    for key in struct.fields:
        if key.startswith(RESERVED_PREFIX):
            raise InvalidArgument(field, f"key {key[:40]!r}: keys starting with _ are reserved")
    return from_struct(struct, field)


def check_key(key: str, field: str) -> str:
    if not key:
        raise InvalidArgument(field, "empty key")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidArgument(field, f"key of {len(key)} characters, at most {MAX_KEY_CHARS}")
    if _has_control(key):
        raise InvalidArgument(field, "keys must not contain control characters")
    return key


def from_struct(
    struct: struct_pb2.Struct, field: str = "payload", depth: int = 1
) -> dict[str, Any]:
    """A Struct as a dict; every key checked, every number finite, at most MAX_DEPTH deep."""
    if depth > MAX_DEPTH:
        raise InvalidArgument(field, f"nested more than {MAX_DEPTH} levels")
    return {
        check_key(k, field): from_value(v, f"{field}.{k[:40]}", depth)
        for k, v in struct.fields.items()
    }


def from_list_value(
    values: struct_pb2.ListValue, field: str = "any_of", depth: int = 1
) -> list[Any]:
    if depth > MAX_DEPTH:
        raise InvalidArgument(field, f"nested more than {MAX_DEPTH} levels")
    return [from_value(v, f"{field}[{i}]", depth) for i, v in enumerate(values.values)]


def from_value(value: struct_pb2.Value, field: str = "equals", depth: int = 0) -> Any:
    """A Value as JSON-like Python (numbers as float); NaN and infinities refused."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "number_value":
        if not math.isfinite(value.number_value):
            raise InvalidArgument(field, "numbers must be finite (no NaN or infinity)")
        return float(value.number_value)
    if kind == "struct_value":
        return from_struct(value.struct_value, field, depth + 1)
    if kind == "list_value":
        return from_list_value(value.list_value, field, depth + 1)
    return getattr(value, kind)  # string_value, bool_value


def check_id(item: str, field: str) -> str:
    """An item id: 1..256 characters, none of them control characters (ids show up in logs,
    messages and file names)."""
    if not item or len(item) > MAX_ID_CHARS:
        raise InvalidArgument(field, f"ids must be 1..{MAX_ID_CHARS} characters")
    if _has_control(item):
        raise InvalidArgument(field, "ids must not contain control characters")
    return item


def check_ids(ids: Iterable[str], field: str) -> list[str]:
    return [check_id(item, f"{field}[{i}]") for i, item in enumerate(ids)]


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


def to_image_query(message: Any, member: str | None, field: str) -> tuple[ImageQuery, str]:
    """The `image` or `regions` member of a request or stream item as the domain's image, and
    the field that names it in errors (`items[3].image`)."""
    if member == "image":
        return bytes(message.image), f"{field}.image"
    if member == "regions":
        name = f"{field}.regions"
        features = from_matrix(message.regions.features, f"{name}.features")
        boxes = from_boxes(message.regions.boxes, features.shape[0], f"{name}.boxes")
        return Regions(features, boxes), name
    raise InvalidArgument(field, "set image or regions")


def from_image_query(query: ImageQuery) -> dict[str, Any]:
    """The domain's image as the `image` or `regions` member of a request (keyword arguments)."""
    if isinstance(query, Regions):
        regions = common_pb2.RegionFeatures(
            features=to_matrix(query.features), boxes=to_boxes(query.boxes)
        )
        return {"regions": regions}
    return {"image": query}
