"""`VectorStore` over qdrant-edge-py: Qdrant's Rust storage engine inside this process.

One shard folder per collection under `root` (`root/teran_images__{version}/`, ...), and the
aliases in `root/aliases.json` (the engine has no aliases of its own; only one process opens a
folder, so that file, replaced atomically, is authoritative). Same
semantics as `QdrantStore`: DOT distance on normalised vectors (= TERAN's cosine), MaxSim
multivectors, exact search only (HNSW on multivectors had ~0.6 recall@10), the same payload
layout and filter translation.

Durability (checked with strace and a SIGKILL test, qdrant-edge-py 0.9): `update()` appends to
the WAL through a shared memory map and returns without any fsync/msync, so an acknowledged write
survives the process being killed (the kernel keeps the dirty pages) but not an OS crash or power
loss. `flush()` msyncs the WAL and fsyncs the segments (~70-150 ms). With `sync_writes=True`
(default) every upsert/delete call ends with `flush()`, so "returned" means "on disk"; with
`sync_writes=False` writes are ~100x cheaper per call and durable against process crashes only.
"""

from __future__ import annotations

import json
import operator
import os
import shutil
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import qdrant_edge as qe

from .base import (
    KEY_ID,
    MatchAtom,
    MultiVectorStore,
    PointData,
    StoreError,
    StoreUnavailable,
    records_by_id,
)

_T = TypeVar("_T")

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


def _bool_matches() -> dict[bool, qe.MatchValue]:
    """MatchValue(True/False) that really match booleans, built once.

    The binding tries int before bool, so MatchValue(True) becomes MatchValue(1) and never
    matches a stored true. numpy.bool_ reaches the bool variant only where its (deprecated)
    use as an integer fails, so it is built once here with that deprecation as an error: doing
    it per request would flip a process-wide warnings filter under other threads.
    """
    out: dict[bool, qe.MatchValue] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for flag in (True, False):
            try:
                match = qe.MatchValue(cast(Any, np.bool_(flag)))
            except (TypeError, DeprecationWarning):
                continue
            if isinstance(match.value, bool) and match.value is flag:
                out[flag] = match
    return out


_BOOL_MATCH = _bool_matches()


def _condition(atom: MatchAtom) -> qe.FieldCondition:
    if atom.kind == "range":
        return qe.FieldCondition(atom.key, range=qe.RangeFloat(gte=atom.value, lte=atom.value))
    if atom.kind == "any":
        return qe.FieldCondition(atom.key, match=qe.MatchAny(atom.value))
    if isinstance(atom.value, bool):
        match = _BOOL_MATCH.get(atom.value)
        if match is None:
            raise StoreError("this qdrant-edge build cannot match booleans (see _bool_matches)")
        return qe.FieldCondition(atom.key, match=match)
    return qe.FieldCondition(atom.key, match=qe.MatchValue(atom.value))


def to_edge_filter(clauses: list[list[MatchAtom]]) -> qe.Filter | None:
    """AND of ORs -> qdrant_edge.Filter (a one-atom OR is the bare condition)."""
    if not clauses:
        return None
    must: list[Any] = []
    for ors in clauses:
        if len(ors) == 1:
            must.append(_condition(ors[0]))
        else:
            must.append(qe.Filter(should=[_condition(a) for a in ors]))
    return qe.Filter(must=must)


class EdgeStore(MultiVectorStore):
    """Persistent store in a folder, no server; one EdgeStore per folder (the WAL is locked)."""

    def __init__(
        self,
        path: str | Path,
        *,
        sync_writes: bool = True,
        max_search_threads: int | None = None,
        alias_ttl_s: float = 0.0,
    ) -> None:
        super().__init__(alias_ttl_s)
        self.root = Path(path)
        self.root.mkdir(parents=True, exist_ok=True)
        self.sync_writes = sync_writes
        self._max_search_threads = max_search_threads
        self._shards: dict[str, qe.EdgeShard] = {}
        self._dims: dict[str, int] = {}
        self._lock = threading.Lock()
        self._aliases_file = self.root / ALIASES_FILE
        self._aliases: dict[str, str] = (
            json.loads(self._aliases_file.read_text()) if self._aliases_file.exists() else {}
        )

    def _config(self, vector_name: str, dim: int) -> qe.EdgeConfig:
        params = qe.EdgeVectorParams(
            size=dim,
            distance=qe.Distance.Dot,
            multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
        )
        return qe.EdgeConfig(
            vectors={vector_name: params}, max_search_threads=self._max_search_threads
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

    def _open_collection(self, name: str, vector_name: str, dim: int) -> None:
        with self._lock:
            if name in self._shards:
                if self._dims[name] != dim:
                    raise ValueError(
                        f"collection {name!r} stores {self._dims[name]}-d vectors, "
                        f"but the model gives {dim}-d"
                    )
                return
        folder = self.root / name
        config = self._config(vector_name, dim)
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
                    f"collection {name!r} at {folder} does not hold {dim}-d DOT/MaxSim "
                    f"{vector_name!r} vectors: {e.__cause__}"
                ) from e
            raise
        with self._lock:
            self._shards[name] = shard
            self._dims[name] = dim

    def _flush(self, name: str) -> None:
        if self.sync_writes:
            self._run("flush", name, lambda s: s.flush())

    def _upsert(self, name: str, vector_name: str, points: list[PointData]) -> None:
        for start in range(0, len(points), UPSERT_BATCH):
            batch = [
                qe.Point(pid, {vector_name: vec.tolist()}, payload)
                for pid, vec, payload in points[start : start + UPSERT_BATCH]
            ]
            self._update("upsert", name, qe.UpdateOperation.upsert_points(batch))
        self._flush(name)

    def _update(self, action: str, name: str, op: qe.UpdateOperation) -> None:
        self._run(action, name, lambda s: s.update(op))

    def _retrieve(
        self, name: str, vector_name: str, pids: list[str], with_vectors: bool
    ) -> dict[str, tuple[np.ndarray | None, dict[str, Any]]]:
        records = self._run(
            "retrieve",
            name,
            lambda s: s.retrieve(
                list(pids),
                with_payload=True if with_vectors else [KEY_ID],
                with_vector=[vector_name] if with_vectors else False,
            ),
        )
        return records_by_id(records, vector_name)

    def _query(
        self,
        name: str,
        vector_name: str,
        query: np.ndarray,
        limit: int,
        clauses: list[list[MatchAtom]],
    ) -> list[tuple[dict[str, Any], float]]:
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(query.tolist(), using=vector_name),
            filter=to_edge_filter(clauses),
            params=qe.SearchParams(exact=True),
            with_payload=[KEY_ID],
            with_vector=False,
        )
        points = self._run("query", name, lambda s: s.query(request))
        return [(dict(p.payload or {}), float(p.score)) for p in points]

    def _delete(self, name: str, pids: list[str]) -> None:
        self._update("delete", name, qe.UpdateOperation.delete_points(list(pids)))
        self._flush(name)

    def _count(self, name: str, clauses: list[list[MatchAtom]] | None = None) -> int:
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

    def _drop(self, name: str) -> None:
        with self._lock:
            shard = self._shards.pop(name, None)
            self._dims.pop(name, None)
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
            for images, sentences, _ in self._opened.values():
                self._count(images)
                self._count(sentences)
        except Exception:
            return False
        return True
