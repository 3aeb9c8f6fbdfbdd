"""`VectorStore` over qdrant-client: a Qdrant server or cluster, or local mode for tests.

Distance is DOT: the model already L2-normalises regions and words, so dot product is the cosine
TERAN scores with; COSINE would renormalise (changing the bytes `get_images` returns for exact
re-scoring by a hair) and cost a normalisation per query vector for nothing.

Multivectors carry no HNSW graph (m=0: HNSW over multivectors gave recall@10 of about 0.6 in
our measurements); two-stage search prefetches candidates from the HNSW-indexed pooled vectors and
orders them by MaxSim, exact search scans every multivector (`layout.py`). Collections are
created with the layout's shard number, replication factor and write consistency factor, so a
Qdrant cluster spreads them over its nodes. Local mode (`QdrantClient(":memory:")` / `path=`)
is always brute force and is pure Python: use it for tests, a server for scale.

A server that cannot be reached, refuses the api key, or does not answer within the client's
timeout is `StoreUnavailable` (UNAVAILABLE to callers, NOT_SERVING in health); after one such
failure calls fail at once for `RETRY_AFTER_S` while health checks keep trying, so a silent
server costs one timeout, not one per call.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
import httpx
import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as m
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from .filters import Clauses, MatchAtom
from .interface import StoreError, StoreUnavailable
from .layout import IndexLayout
from .multivector import MultiVectorStore
from .naming import SUMMARY_VECTOR
from .points import PointData, QueryPlan, Row, records_by_id, vector_of
from .records import KEY_ID

_T = TypeVar("_T")

RETRY_AFTER_S = 1.0
"""After a call failed to reach Qdrant, calls fail at once for this long (health checks still
try): against a server that accepts but does not answer, only the first call waits its timeout."""

UPSERT_BATCH = 64
"""Points per request: 64 x 36 x 256 floats is ~10 MB of JSON, well under the 32 MB limit."""

_UNAVAILABLE_HTTP = {502, 503, 504}
_REFUSED_HTTP = {401, 403}
"""A wrong or missing api key: the dependency refuses this process (UNAVAILABLE, not a crash)."""
_UNAVAILABLE_GRPC = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
_REFUSED_GRPC = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


@contextmanager
def _translate_errors(action: str) -> Iterator[None]:
    """Turn transport failures into StoreUnavailable, other backend failures into StoreError."""
    try:
        yield
    except (ValueError, StoreError):
        raise
    except (ResponseHandlingException, httpx.TransportError, ConnectionError, TimeoutError) as e:
        raise StoreUnavailable(f"Qdrant unreachable during {action}: {e}") from e
    except UnexpectedResponse as e:
        if e.status_code in _REFUSED_HTTP:
            raise StoreUnavailable(
                f"Qdrant refused {action} (HTTP {e.status_code}): check common.store.api_key"
            ) from e
        if e.status_code in _UNAVAILABLE_HTTP:
            raise StoreUnavailable(f"Qdrant unavailable during {action}: {e}") from e
        raise StoreError(f"Qdrant rejected {action}: {e}") from e
    except grpc.RpcError as e:
        code = e.code() if isinstance(e, grpc.Call) else None
        if code in _REFUSED_GRPC:
            raise StoreUnavailable(
                f"Qdrant refused {action} ({code}): check common.store.api_key"
            ) from e
        if code in _UNAVAILABLE_GRPC:
            raise StoreUnavailable(f"Qdrant unreachable during {action}: {e}") from e
        raise StoreError(f"Qdrant rejected {action}: {e}") from e
    except RuntimeError as e:
        raise StoreError(f"Qdrant {action} failed: {e}") from e


def _condition(atom: MatchAtom) -> m.FieldCondition:
    if atom.kind == "range":
        return m.FieldCondition(key=atom.key, range=m.Range(gte=atom.value, lte=atom.value))
    if atom.kind == "any":
        return m.FieldCondition(key=atom.key, match=m.MatchAny(any=atom.value))
    return m.FieldCondition(key=atom.key, match=m.MatchValue(value=atom.value))


def to_qdrant_filter(clauses: Clauses) -> m.Filter | None:
    """AND of ORs -> models.Filter (a one-atom OR is the bare condition)."""
    if not clauses:
        return None
    must: list[m.Condition] = []
    for ors in clauses:
        if len(ors) == 1:
            must.append(_condition(ors[0]))
        else:
            must.append(m.Filter(should=[_condition(a) for a in ors]))
    return m.Filter(must=must)


class QdrantStore(MultiVectorStore):
    """Store over a `QdrantClient`; the store owns the client and closes it.

    Durability: local path mode commits every point to SQLite (fsync per commit; survives
    SIGKILL, tested). Against a server, `wait=True` returns once the write is applied and in the
    WAL; the server's WAL is the same mmap WAL as qdrant-edge's, which survives a process kill
    but is fsynced only on flush (inferred, not testable here), so power-loss safety there comes
    from replication (replication_factor >= 2, write_consistency_factor).

    Local mode is not thread-safe, so calls are serialised there; against a server they run
    concurrently.
    """

    def __init__(
        self, client: QdrantClient, alias_ttl_s: float = 1.0, layout: IndexLayout | None = None
    ) -> None:
        super().__init__(layout, alias_ttl_s)
        self._client = client
        opts = client.init_options
        self.local = opts.get("location") == ":memory:" or opts.get("path") is not None
        self._lock: threading.Lock | None = threading.Lock() if self.local else None
        self._down: tuple[float, str] | None = None
        """When and why the last call could not reach Qdrant; cleared by any answer."""

    def _call(self, action: str, fn: Callable[[], _T], probe: bool = False) -> _T:
        down = self._down
        if down is not None and not probe and time.monotonic() - down[0] < RETRY_AFTER_S:
            raise StoreUnavailable(f"{down[1]} (not retried for {RETRY_AFTER_S:g}s)")
        try:
            with _translate_errors(action):
                if self._lock is None:
                    result = fn()
                else:
                    with self._lock:
                        result = fn()
        except StoreUnavailable as err:
            self._down = (time.monotonic(), str(err))
            raise
        self._down = None
        return result

    def _exists(self, name: str) -> bool:
        return bool(self._call("collection_exists", lambda: self._client.collection_exists(name)))

    def _vectors_config(self, vector_name: str, dim: int, indexed: bool) -> dict[str, Any]:
        multi = m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM)
        if not indexed:
            params = m.VectorParams(size=dim, distance=m.Distance.DOT, multivector_config=multi)
            return {vector_name: params}
        layout = self.layout
        quantization: Any = None
        if layout.quantization == "int8":
            quantization = m.ScalarQuantization(
                scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, always_ram=True)
            )
        elif layout.quantization == "binary":
            quantization = m.BinaryQuantization(binary=m.BinaryQuantizationConfig(always_ram=True))
        return {
            vector_name: m.VectorParams(
                size=dim,
                distance=m.Distance.DOT,
                multivector_config=multi,
                on_disk=layout.originals_on_disk,
                quantization_config=quantization,
                hnsw_config=m.HnswConfigDiff(m=0),
            ),
            SUMMARY_VECTOR: m.VectorParams(
                size=dim,
                distance=m.Distance.DOT,
                multivector_config=multi,
                on_disk=layout.originals_on_disk,
                quantization_config=quantization,
                hnsw_config=m.HnswConfigDiff(
                    m=layout.hnsw_m, ef_construct=layout.hnsw_ef_construct
                ),
            ),
        }

    def _open_collection(self, name: str, vector_name: str, dim: int, indexed: bool) -> None:
        layout = self.layout
        if not self._exists(name):
            try:
                self._call(
                    "create_collection",
                    lambda: self._client.create_collection(
                        name,
                        vectors_config=self._vectors_config(vector_name, dim, indexed),
                        shard_number=layout.shard_number,
                        replication_factor=layout.replication_factor,
                        write_consistency_factor=layout.write_consistency_factor,
                        on_disk_payload=layout.payload_on_disk if indexed else None,
                    ),
                )
            except (StoreError, ValueError):
                # Another replica may have created it first; re-check below.
                if not self._exists(name):
                    raise
        info = self._call("get_collection", lambda: self._client.get_collection(name))
        vectors = info.config.params.vectors
        have = vectors.get(vector_name) if isinstance(vectors, dict) else None
        if have is None:
            raise ValueError(f"collection {name!r} has no vector {vector_name!r}: {vectors!r}")
        comparator = have.multivector_config.comparator if have.multivector_config else None
        if have.size != dim:
            raise ValueError(
                f"collection {name!r} stores {have.size}-d vectors, but the model gives {dim}-d"
            )
        if have.distance != m.Distance.DOT or comparator != m.MultiVectorComparator.MAX_SIM:
            raise ValueError(
                f"collection {name!r} uses {have.distance} / {comparator}, expected DOT / MAX_SIM"
            )
        if indexed and isinstance(vectors, dict) and SUMMARY_VECTOR not in vectors:
            raise ValueError(
                f"collection {name!r} has no {SUMMARY_VECTOR!r} vector (made before two-stage "
                "search): re-index it into a new model version"
            )

    def _upsert(self, name: str, points: list[PointData]) -> None:
        for start in range(0, len(points), UPSERT_BATCH):
            batch = [
                m.PointStruct(
                    id=pid, vector={k: v.tolist() for k, v in vectors.items()}, payload=payload
                )
                for pid, vectors, payload in points[start : start + UPSERT_BATCH]
            ]
            self._upsert_batch(name, batch)

    def _upsert_batch(self, name: str, batch: list[m.PointStruct]) -> None:
        self._call("upsert", lambda: self._client.upsert(name, batch, wait=True))

    def _retrieve(
        self, name: str, vector_name: str, pids: list[str], payload: bool, vectors: bool
    ) -> dict[str, tuple[np.ndarray | None, dict[str, Any]]]:
        records = self._call(
            "retrieve",
            lambda: self._client.retrieve(
                name,
                ids=pids,
                with_payload=True if payload else [KEY_ID],
                with_vectors=[vector_name] if vectors else False,
            ),
        )
        return records_by_id(records, vector_name)

    def _query(self, name: str, plan: QueryPlan) -> list[Row]:
        flt = to_qdrant_filter(plan.clauses)
        layout = self.layout
        prefetch = None
        # Local mode is brute force and warns that search_params are ignored.
        params = None if self.local else m.SearchParams(exact=True)
        if plan.two_stage:
            prefetch = m.Prefetch(
                query=plan.query.tolist(),
                using=SUMMARY_VECTOR,
                limit=plan.candidates,
                filter=flt,
                params=None
                if self.local
                else m.SearchParams(hnsw_ef=max(layout.hnsw_ef, plan.candidates)),
            )
            params = (
                None
                if self.local
                else m.SearchParams(
                    quantization=m.QuantizationSearchParams(
                        rescore=layout.rescore, oversampling=layout.oversampling
                    )
                )
            )
        res = self._call(
            "query_points",
            lambda: self._client.query_points(
                name,
                query=plan.query.tolist(),
                using=plan.vector,
                prefetch=prefetch,
                limit=plan.limit,
                query_filter=flt,
                search_params=params,
                with_payload=True if plan.with_vectors else [KEY_ID],
                with_vectors=[plan.vector] if plan.with_vectors else False,
            ),
        )
        return [
            (dict(p.payload or {}), float(p.score), vector_of(p.vector, plan.vector))
            for p in res.points
        ]

    def _delete(self, name: str, pids: list[str]) -> None:
        selector = m.PointIdsList(points=list(pids))
        self._call("delete", lambda: self._client.delete(name, selector, wait=True))

    def _count(self, name: str, clauses: Clauses | None = None) -> int:
        flt = to_qdrant_filter(clauses or [])
        return int(
            self._call(
                "count", lambda: self._client.count(name, count_filter=flt, exact=True).count
            )
        )

    def _scroll(self, name: str, keys: list[str], batch: int) -> Iterator[dict[str, Any]]:
        offset: Any = None
        while True:
            points, offset = self._call(
                "scroll",
                functools.partial(
                    self._client.scroll,
                    name,
                    limit=batch,
                    offset=offset,
                    with_payload=list(keys),
                    with_vectors=False,
                ),
            )
            for point in points:
                yield dict(point.payload or {})
            if offset is None:
                return

    def _get_alias(self, alias: str) -> str | None:
        found = self._call("get_aliases", self._client.get_aliases).aliases
        return next((a.collection_name for a in found if a.alias_name == alias), None)

    def _set_aliases(self, aliases: dict[str, str]) -> None:
        # Qdrant applies one update_collection_aliases call atomically: readers see all the
        # old targets or all the new ones.
        ops: list[Any] = [
            m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=alias))
            for alias in aliases
            if self._get_alias(alias) is not None
        ]
        ops += [
            m.CreateAliasOperation(
                create_alias=m.CreateAlias(collection_name=name, alias_name=alias)
            )
            for alias, name in aliases.items()
        ]
        self._call("update_collection_aliases", lambda: self._client.update_collection_aliases(ops))

    def _collections(self) -> list[str]:
        found = self._call("get_collections", self._client.get_collections).collections
        return sorted(c.name for c in found)

    def _drop(self, name: str) -> None:
        self._call("delete_collection", lambda: self._client.delete_collection(name))

    def _close(self) -> None:
        self._call("close", self._client.close)

    def healthy(self) -> bool:
        if self._closed:
            return False
        try:
            self._call("health check", self._client.get_collections, probe=True)
        except Exception:
            return False
        return True
