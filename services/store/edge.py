"""`VectorStore` over qdrant-edge-py: Qdrant's Rust storage engine inside this process.

One shard folder per collection under `root` (`root/teran_images__{version}/`, ...), and the
aliases in `root/aliases.json` (the engine has no aliases of its own; only one process opens a
folder, so that file, replaced atomically, is authoritative). Same
semantics as `QdrantStore`: DOT distance on normalised vectors (= TERAN's cosine), MaxSim
multivectors without an HNSW graph of their own (m=0: HNSW over multivectors had ~0.6
recall@10), a pooled multivector with HNSW for two-stage search (`layout.py`), the same payload
layout and filter translation. The engine has no background optimiser: a collection builds the
index of what it was sent once `layout.indexing_threshold` points have gathered, in a thread
of its own (searches go on meanwhile, brute force over the unindexed part).

Durability (checked with strace and a SIGKILL test, qdrant-edge-py 0.9): `update()` appends to
the WAL through a shared memory map and returns without any fsync/msync, so an acknowledged write
survives the process being killed (the kernel keeps the dirty pages) but not an OS crash or power
loss. `flush()` msyncs the WAL and fsyncs the segments (~70-150 ms). With `sync_writes=True`
(default) every upsert/delete call ends with `flush()`, so "returned" means "on disk"; with
`sync_writes=False` writes are ~100x cheaper per call and durable against process crashes only.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import qdrant_edge as qe

from .edge_filters import to_edge_filter
from .filters import Clauses
from .interface import StoreError, StoreUnavailable
from .layout import IndexLayout
from .multivector import MultiVectorStore
from .naming import SUMMARY_VECTOR
from .points import PointData, QueryPlan, Row, records_by_id, vector_of
from .records import KEY_ID

_T = TypeVar("_T")

log = logging.getLogger(__name__)

ALIASES_FILE = "aliases.json"

UPSERT_BATCH = 512
"""Points per update operation: bounds the Python-side copy while keeping calls few.

Vectors go in as Python lists: the binding also takes ndarrays but converts them 2-3x slower.
"""


@contextmanager
def _translate_errors(action: str, name: str) -> Iterator[None]:
    """qdrant-edge raises bare Exception("Service runtime error: ..."); give it a type."""
    try:
        yield
    except (ValueError, TypeError, StoreError):
        raise
    except Exception as e:
        msg = str(e)
        if "WouldBlock" in msg:
            raise StoreError(
                f"collection {name!r} is already open by another EdgeStore (this process or "
                f"another): its WAL is locked ({msg})"
            ) from e
        if "not initialized" in msg:
            raise StoreUnavailable(f"collection {name!r} is closed ({msg})") from e
        raise StoreError(f"qdrant-edge {action} on {name!r} failed: {msg}") from e


class EdgeStore(MultiVectorStore):
    """Persistent store in a folder, no server; one EdgeStore per folder (the WAL is locked)."""

    def __init__(
        self,
        path: str | Path,
        *,
        sync_writes: bool = True,
        max_search_threads: int | None = None,
        alias_ttl_s: float = 0.0,
        layout: IndexLayout | None = None,
    ) -> None:
        super().__init__(layout, alias_ttl_s)
        if self.layout.shard_number != 1 or self.layout.replication_factor != 1:
            raise ValueError(
                "the embedded store is one shard without replicas: shard_number and "
                "replication_factor must be 1 (use a Qdrant cluster, store kind 'qdrant')"
            )
        self.root = Path(path)
        self.root.mkdir(parents=True, exist_ok=True)
        self.sync_writes = sync_writes
        self._max_search_threads = max_search_threads
        self._shards: dict[str, qe.EdgeShard] = {}
        self._dims: dict[str, int] = {}
        self._lock = threading.Lock()
        self._indexed: set[str] = set()
        """Collections with a first-stage index (the sources have none)."""
        self._unindexed: dict[str, int] = {}
        self._indexing: set[str] = set()
        self._indexer = ThreadPoolExecutor(1, thread_name_prefix="edge-index")
        self._aliases_file = self.root / ALIASES_FILE
        self._aliases: dict[str, str] = (
            json.loads(self._aliases_file.read_text()) if self._aliases_file.exists() else {}
        )

    def _config(self, vector_name: str, dim: int, indexed: bool) -> qe.EdgeConfig:
        layout = self.layout
        multi = qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim)
        if not indexed:
            params = qe.EdgeVectorParams(
                size=dim, distance=qe.Distance.Dot, multivector_config=multi
            )
            return qe.EdgeConfig(
                vectors={vector_name: params}, max_search_threads=self._max_search_threads
            )
        quantization: Any = None
        if layout.quantization == "int8":
            quantization = qe.ScalarQuantizationConfig(qe.ScalarType.Int8, always_ram=True)
        elif layout.quantization == "binary":
            quantization = qe.BinaryQuantizationConfig(always_ram=True)
        vectors = {
            vector_name: qe.EdgeVectorParams(
                size=dim,
                distance=qe.Distance.Dot,
                multivector_config=multi,
                on_disk=layout.originals_on_disk,
                quantization_config=quantization,
                hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),
            ),
            SUMMARY_VECTOR: qe.EdgeVectorParams(
                size=dim,
                distance=qe.Distance.Dot,
                multivector_config=multi,
                on_disk=layout.originals_on_disk,
                quantization_config=quantization,
                hnsw_config=qe.HnswIndexConfig(
                    m=layout.hnsw_m,
                    ef_construct=layout.hnsw_ef_construct,
                    full_scan_threshold=10,
                ),
            ),
        }
        return qe.EdgeConfig(
            vectors=vectors,
            on_disk_payload=layout.payload_on_disk,
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=layout.indexing_threshold),
            max_search_threads=self._max_search_threads,
        )

    def _shard(self, name: str) -> qe.EdgeShard:
        with self._lock:
            shard = self._shards.get(name)
        if shard is None:
            raise StoreUnavailable(f"collection {name!r} is not open")
        return shard

    def _run(self, action: str, name: str, fn: Callable[[qe.EdgeShard], _T]) -> _T:
        shard = self._shard(name)
        with _translate_errors(action, name):
            return fn(shard)

    def _open_collection(self, name: str, vector_name: str, dim: int, indexed: bool) -> None:
        with self._lock:
            if name in self._shards:
                if self._dims[name] != dim:
                    raise ValueError(
                        f"collection {name!r} stores {self._dims[name]}-d vectors, "
                        f"but the model gives {dim}-d"
                    )
                return
        folder = self.root / name
        config = self._config(vector_name, dim, indexed)
        exists = (folder / "edge_config.json").exists() or (folder / "segments").exists()
        try:
            with _translate_errors("open", name):
                if exists:
                    shard = qe.EdgeShard.load(str(folder), config)
                else:
                    shard = qe.EdgeShard.create(str(folder), config)
        except StoreError as e:
            if "ncompatible" in str(e):
                raise ValueError(
                    f"collection {name!r} at {folder} was not made with this layout "
                    f"({dim}-d DOT/MaxSim {vector_name!r} vectors, a {SUMMARY_VECTOR!r} "
                    f"vector, {self.layout}); re-index it into a new model version or delete "
                    f"the folder: {e.__cause__}"
                ) from e
            raise
        with self._lock:
            self._shards[name] = shard
            self._dims[name] = dim
            if indexed:
                self._indexed.add(name)

    def _flush(self, name: str) -> None:
        if self.sync_writes:
            self._run("flush", name, lambda s: s.flush())

    def _upsert(self, name: str, points: list[PointData]) -> None:
        for start in range(0, len(points), UPSERT_BATCH):
            batch = [
                qe.Point(pid, {k: v.tolist() for k, v in vectors.items()}, payload)
                for pid, vectors, payload in points[start : start + UPSERT_BATCH]
            ]
            self._update("upsert", name, qe.UpdateOperation.upsert_points(batch))
        self._flush(name)
        self._count_unindexed(name, len(points))

    def _count_unindexed(self, name: str, n: int) -> None:
        """Build the collection's index in the background once enough points have gathered."""
        with self._lock:
            if name not in self._indexed:
                return
            pending = self._unindexed.get(name, 0) + n
            self._unindexed[name] = pending
            start = pending >= self.layout.indexing_threshold and name not in self._indexing
            if start:
                self._indexing.add(name)
                self._unindexed[name] = 0
        if start:
            self._indexer.submit(self._index_in_background, name)

    def _index_in_background(self, name: str) -> None:
        try:
            self._build_index(name)
        except StoreError as e:  # closed or dropped meanwhile: the next load retries
            log.warning("indexing %s stopped: %s", name, e)
        finally:
            with self._lock:
                self._indexing.discard(name)

    def _build_index(self, name: str) -> None:
        self._run("optimize", name, lambda s: s.optimize())

    def _update(self, action: str, name: str, op: qe.UpdateOperation) -> None:
        self._run(action, name, lambda s: s.update(op))

    def _retrieve(
        self, name: str, vector_name: str, pids: list[str], payload: bool, vectors: bool
    ) -> dict[str, tuple[np.ndarray | None, dict[str, Any]]]:
        records = self._run(
            "retrieve",
            name,
            lambda s: s.retrieve(
                list(pids),
                with_payload=True if payload else [KEY_ID],
                with_vector=[vector_name] if vectors else False,
            ),
        )
        return records_by_id(records, vector_name)

    def _query(self, name: str, plan: QueryPlan) -> list[Row]:
        flt = to_edge_filter(plan.clauses)
        query = qe.Query.Nearest(plan.query.tolist(), using=plan.vector)
        with_vector = [plan.vector] if plan.with_vectors else False
        if not plan.two_stage:
            request = qe.QueryRequest(
                limit=plan.limit,
                query=query,
                filter=flt,
                params=qe.SearchParams(exact=True),
                with_payload=True if plan.with_vectors else [KEY_ID],
                with_vector=with_vector,
            )
        else:
            layout = self.layout
            prefetch = qe.Prefetch(
                limit=plan.candidates,
                query=qe.Query.Nearest(plan.query.tolist(), using=SUMMARY_VECTOR),
                params=qe.SearchParams(hnsw_ef=max(layout.hnsw_ef, plan.candidates)),
                filter=flt,
            )
            rescore = qe.QuantizationSearchParams(
                rescore=layout.rescore, oversampling=layout.oversampling
            )
            request = qe.QueryRequest(
                limit=plan.limit,
                query=query,
                prefetches=[prefetch],
                filter=flt,
                params=qe.SearchParams(quantization=rescore),
                with_payload=True if plan.with_vectors else [KEY_ID],
                with_vector=with_vector,
            )
        points = self._run("query", name, lambda s: s.query(request))
        return [
            (dict(p.payload or {}), float(p.score), vector_of(p.vector, plan.vector))
            for p in points
        ]

    def _delete(self, name: str, pids: list[str]) -> None:
        self._update("delete", name, qe.UpdateOperation.delete_points(list(pids)))
        self._flush(name)

    def _count(self, name: str, clauses: Clauses | None = None) -> int:
        request = qe.CountRequest(exact=True, filter=to_edge_filter(clauses or []))
        return int(self._run("count", name, operator.methodcaller("count", request)))

    def _scroll(self, name: str, keys: list[str], batch: int) -> Iterator[dict[str, Any]]:
        offset = None
        while True:
            request = qe.ScrollRequest(
                limit=batch, offset=offset, with_payload=list(keys), with_vector=False
            )
            points, offset = self._run("scroll", name, operator.methodcaller("scroll", request))
            for point in points:
                yield dict(point.payload or {})
            if offset is None:
                return

    def _get_alias(self, alias: str) -> str | None:
        with self._lock:
            return self._aliases.get(alias)

    def _set_aliases(self, aliases: dict[str, str]) -> None:
        with self._lock:
            updated = {**self._aliases, **aliases}
            scratch = self._aliases_file.with_suffix(".tmp")
            with open(scratch, "w") as f:
                json.dump(updated, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(scratch, self._aliases_file)  # atomic: readers see old or new, whole
            directory = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
            self._aliases = updated

    def _collections(self) -> list[str]:
        return sorted(
            p.name
            for p in self.root.iterdir()
            if (p / "edge_config.json").exists() or (p / "segments").exists()
        )

    def _wait_for_indexing(self, name: str | None = None) -> None:
        """Indexing holds the shard: let it finish before the shard closes under it."""
        while True:
            with self._lock:
                busy = name in self._indexing if name else bool(self._indexing)
            if not busy:
                return
            time.sleep(0.05)

    def _drop(self, name: str) -> None:
        self._wait_for_indexing(name)
        with self._lock:
            shard = self._shards.pop(name, None)
            self._dims.pop(name, None)
            self._indexed.discard(name)
            self._unindexed.pop(name, None)
        if shard is not None:
            with _translate_errors("close", name):
                shard.close()
        shutil.rmtree(self.root / name, ignore_errors=True)

    def flush(self) -> None:
        """Force everything to disk (for `sync_writes=False` users at checkpoints)."""
        with self._lock:
            names = list(self._shards)
        for name in names:
            self._run("flush", name, lambda s: s.flush())

    def _close(self) -> None:
        self._indexer.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            shards = list(self._shards.items())
            self._shards.clear()
            self._dims.clear()
        errors = []
        for name, shard in shards:
            try:
                with _translate_errors("close", name):
                    shard.close()
            except StoreError as e:
                errors.append(str(e))
        if errors:
            raise StoreError("; ".join(errors))

    def healthy(self) -> bool:
        if self._closed or not self._opened:
            return False
        try:
            for index in self._opened.values():
                index.images.count()
                index.sentences.count()
        except Exception:
            return False
        return True
