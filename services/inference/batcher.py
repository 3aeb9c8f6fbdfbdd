"""Micro-batching: concurrent requests merged into one model call before they reach the model.

A model call costs about the same for 1 or 16 rows on a CPU or a GPU, so under load requests
that arrive while a call runs share the next one, of up to `max_batch` rows; `max_delay_ms` (0
by default: a lone request never waits) lets a request wait that long for company. The
inputs are padded to the longest sequence in the call; every output is cut back to its own
request's rows and width, so a caller sees exactly what it would have seen alone (the encoders
are batch-invariant).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.inference.base import InferenceBackend
from services.metrics import MODEL_BATCH_SIZE, QUEUE_DEPTH, timed


def _pad_to(arrays: Sequence[np.ndarray], axis: int) -> np.ndarray:
    width = max(a.shape[axis] for a in arrays)
    padded = []
    for a in arrays:
        pad = [(0, 0)] * a.ndim
        pad[axis] = (0, width - a.shape[axis])
        padded.append(np.pad(a, pad))
    return np.concatenate(padded)


@dataclass
class _Request:
    inputs: tuple[np.ndarray, ...]
    rows: int
    future: Future[Any] = field(default_factory=Future)


class _Lane:
    """One model's queue and the thread that drains it in batches."""

    def __init__(
        self,
        name: str,
        call: Callable[[list[_Request]], list[Any]],
        max_batch: int,
        max_delay_s: float,
    ) -> None:
        self.name = name
        self.call = call
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.pending: list[_Request] = []
        self.cond = threading.Condition()
        self.closed = False
        threading.Thread(target=self._run, name=f"batch-{name}", daemon=True).start()

    def submit(self, inputs: tuple[np.ndarray, ...]) -> Any:
        request = _Request(inputs, rows=len(inputs[0]))
        with self.cond:
            if self.closed:
                raise RuntimeError(f"{self.name} batcher is closed")
            self.pending.append(request)
            QUEUE_DEPTH.labels(self.name).set(sum(r.rows for r in self.pending))
            self.cond.notify()
        return request.future.result()

    def _take(self) -> list[_Request]:
        with self.cond:
            while not self.pending and not self.closed:
                self.cond.wait()
            if self.closed and not self.pending:
                return []
            deadline = time.monotonic() + self.max_delay_s
            while sum(r.rows for r in self.pending) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0 or not self.cond.wait(left):
                    break
            batch: list[_Request] = []
            rows = 0
            while self.pending and (not batch or rows + self.pending[0].rows <= self.max_batch):
                request = self.pending.pop(0)
                batch.append(request)
                rows += request.rows
            QUEUE_DEPTH.labels(self.name).set(sum(r.rows for r in self.pending))
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            MODEL_BATCH_SIZE.labels(self.name).observe(sum(r.rows for r in batch))
            try:
                with timed("inference", self.name):
                    results = self.call(batch)
                for request, result in zip(batch, results, strict=True):
                    request.future.set_result(result)
            except Exception as err:
                for request in batch:
                    request.future.set_exception(err)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class BatchingBackend:
    """An `InferenceBackend` that micro-batches calls to another one."""

    def __init__(self, inner: InferenceBackend, max_batch: int = 32, max_delay_ms: float = 0.0):
        self.inner = inner
        self.info = inner.info
        delay = max_delay_ms / 1000
        self._text = _Lane("text", self._text_call, max_batch, delay)
        self._regions = _Lane("regions", self._regions_call, max_batch, delay)
        self._pixels = _Lane("pixels", self._pixels_call, max_batch, delay)

    def _text_call(self, batch: list[_Request]) -> list[np.ndarray]:
        ids = _pad_to([r.inputs[0] for r in batch], axis=1)
        lengths = np.concatenate([r.inputs[1] for r in batch])
        out = self.inner.encode_text(ids, lengths)
        return _split(out, batch, lambda r: r.inputs[0].shape[1])

    def _regions_call(self, batch: list[_Request]) -> list[np.ndarray]:
        features = _pad_to([r.inputs[0] for r in batch], axis=1)
        boxes = _pad_to([r.inputs[1] for r in batch], axis=1)
        counts = np.concatenate([r.inputs[2] for r in batch])
        out = self.inner.encode_regions(features, boxes, counts)
        return _split(out, batch, lambda r: r.inputs[0].shape[1] + 1)

    def _pixels_call(self, batch: list[_Request]) -> list[tuple[np.ndarray, np.ndarray]]:
        slots, boxes = self.inner.encode_pixels(np.concatenate([r.inputs[0] for r in batch]))
        starts = np.cumsum([0] + [r.rows for r in batch])
        return [(slots[a:b], boxes[a:b]) for a, b in itertools.pairwise(starts)]

    def encode_text(self, token_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        result: np.ndarray = self._text.submit((token_ids, lengths))
        return result

    def encode_regions(
        self, features: np.ndarray, boxes: np.ndarray, n_regions: np.ndarray
    ) -> np.ndarray:
        result: np.ndarray = self._regions.submit((features, boxes, n_regions))
        return result

    def encode_pixels(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result: tuple[np.ndarray, np.ndarray] = self._pixels.submit((pixels,))
        return result

    def healthy(self) -> bool:
        return self.inner.healthy()

    def close(self) -> None:
        for lane in (self._text, self._regions, self._pixels):
            lane.close()
        self.inner.close()


def _split(
    out: np.ndarray, batch: list[_Request], width: Callable[[_Request], int]
) -> list[np.ndarray]:
    starts = np.cumsum([0] + [r.rows for r in batch])
    return [out[a:b, : width(r)] for r, a, b in zip(batch, starts[:-1], starts[1:], strict=True)]
