"""Proto messages <-> numpy and Python values, with the checks a public API owes its callers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from google.protobuf import json_format, struct_pb2

from services.errors import InvalidArgument
from teran.v1 import common_pb2


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


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    return dict(json_format.MessageToDict(struct))


def from_list_value(values: struct_pb2.ListValue) -> list[Any]:
    return list(json_format.MessageToDict(values))


def from_value(value: struct_pb2.Value) -> Any:
    return json_format.MessageToDict(value)


def check_ids(ids: Iterable[str], field: str) -> list[str]:
    out = list(ids)
    for i, item in enumerate(out):
        if not item or len(item) > 256:
            raise InvalidArgument(f"{field}[{i}]", "ids must be 1..256 characters")
    return out
