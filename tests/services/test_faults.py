"""Dependency faults at the server level: Triton killed and restarted, the store's server gone,
refusing, or silent. RPCs answer UNAVAILABLE fast, readiness goes NOT_SERVING (liveness stays
SERVING) and service resumes by itself when the dependency returns, without a restart.

Triton is the real tritonserver of nvidia-pytriton. No Qdrant server can run here, so
`QdrantStandIn` stands in for one: Qdrant's REST API (the calls qdrant-client makes for the
store) served on 127.0.0.1 over qdrant-client's local mode, which can be stopped (connections
refused), made to drop connections, or to accept them and never answer.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from pydantic import BaseModel, TypeAdapter
from qdrant_client import QdrantClient
from qdrant_client import models as m

from services.config import load_settings
from services.main import start
from services.store.interface import StoreUnavailable
from teran.tritonserver import TritonServer, free_port
from teran_protos.v1 import image_encoder_pb2 as ipb
from teran_protos.v1 import image_encoder_pb2_grpc as igrpc
from teran_protos.v1 import ranker_pb2 as rpb
from teran_protos.v1 import ranker_pb2_grpc as rgrpc
from tests.services.test_triton_services import (
    NOT_SERVING,
    QUERIES,
    SERVING,
    _assert_same_hits,
    _health,
    _items,
    _triton_settings,
    _wait_health,
    repository,  # noqa: F401 (fixture)
)

FAST_S = 2.0
"""An RPC to a process whose dependency is down answers within this (not a 30 s timeout)."""
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE

pytestmark = [
    pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection"),
    pytest.mark.filterwarnings("ignore:Failed to obtain server version"),
]


# --- a stand-in for a Qdrant server -------------------------------------------------------

_Route = tuple[str, re.Pattern[str], Callable[..., Any]]


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list | tuple):
        return [_dump(v) for v in value]
    return value


class QdrantStandIn:
    """Stands in for a Qdrant server: its REST API over qdrant-client's local mode, with the
    api-key check, optional TLS, and faults (`stop`, `mode = "drop" | "hang"`). The data
    outlives a stop, as a server's storage does."""

    def __init__(self, api_key: str | None = None, tls: tuple[Path, Path] | None = None) -> None:
        self.api_key = api_key
        self.tls = tls
        self.db = QdrantClient(":memory:")
        self.lock = threading.Lock()
        self.mode = "up"
        self.port = 0
        self.requests = 0
        self.seen_keys: list[str | None] = []
        self._server: ThreadingHTTPServer | None = None
        self._release = threading.Event()
        self.routes: list[_Route] = [
            (verb, re.compile(f"^{path}$"), fn)
            for verb, path, fn in (
                ("GET", "/", lambda: {"title": "qdrant stand-in", "version": "1.20.0"}),
                ("GET", "/collections", lambda: self.db.get_collections()),
                ("GET", "/aliases", lambda: self.db.get_aliases()),
                ("POST", "/collections/aliases", self._aliases),
                ("GET", "/collections/([^/]+)/exists", self._exists),
                ("PUT", "/collections/([^/]+)", self._create),
                ("GET", "/collections/([^/]+)", lambda c: self.db.get_collection(c)),
                ("DELETE", "/collections/([^/]+)", lambda c: self.db.delete_collection(c)),
                ("PUT", "/collections/([^/]+)/points", self._upsert),
                ("POST", "/collections/([^/]+)/points", self._retrieve),
                ("POST", "/collections/([^/]+)/points/query", self._query),
                ("POST", "/collections/([^/]+)/points/delete", self._delete),
                ("POST", "/collections/([^/]+)/points/count", self._count),
                ("POST", "/collections/([^/]+)/points/scroll", self._scroll),
            )
        ]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    # -- the API -----------------------------------------------------------------------------

    def _aliases(self, body: dict[str, Any]) -> Any:
        actions = m.ChangeAliasesOperation.model_validate(body).actions
        return self.db.update_collection_aliases(actions)

    def _exists(self, name: str) -> Any:
        return {"exists": self.db.collection_exists(name)}

    def _create(self, name: str, body: dict[str, Any]) -> Any:
        req = m.CreateCollection.model_validate(body)
        return self.db.create_collection(
            name, vectors_config=req.vectors, on_disk_payload=req.on_disk_payload
        )

    def _upsert(self, name: str, body: dict[str, Any]) -> Any:
        return self.db.upsert(name, m.PointsList.model_validate(body).points)

    def _retrieve(self, name: str, body: dict[str, Any]) -> Any:
        req = m.PointRequest.model_validate(body)
        return self.db.retrieve(
            name,
            req.ids,
            with_payload=req.with_payload if req.with_payload is not None else True,
            with_vectors=req.with_vector or False,
        )

    def _query(self, name: str, body: dict[str, Any]) -> Any:
        req = m.QueryRequest.model_validate(body)
        return self.db.query_points(
            name,
            query=req.query,
            using=req.using,
            prefetch=req.prefetch,
            query_filter=req.filter,
            limit=req.limit or 10,
            with_payload=req.with_payload or False,
            with_vectors=req.with_vector or False,
        )

    def _delete(self, name: str, body: dict[str, Any]) -> Any:
        selector: Any = TypeAdapter(m.PointsSelector).validate_python(body)
        return self.db.delete(name, selector)

    def _count(self, name: str, body: dict[str, Any]) -> Any:
        req = m.CountRequest.model_validate(body)
        return self.db.count(name, count_filter=req.filter, exact=bool(req.exact))

    def _scroll(self, name: str, body: dict[str, Any]) -> Any:
        req = m.ScrollRequest.model_validate(body)
        points, offset = self.db.scroll(
            name,
            limit=req.limit or 10,
            offset=req.offset,
            with_payload=req.with_payload if req.with_payload is not None else True,
            with_vectors=req.with_vector or False,
        )
        return {"points": _dump(points), "next_page_offset": offset}

    def answer(self, verb: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        for want, pattern, fn in self.routes:
            found = pattern.match(path)
            if want == verb and found:
                args = [*found.groups(), *([body or {}] if verb in ("PUT", "POST") else [])]
                with self.lock:  # local mode is not thread-safe
                    result = _dump(fn(*args))
                return 200, result if path == "/" else {"result": result, "status": "ok"}
        return 404, {"status": {"error": f"stand-in has no {verb} {path}"}}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> QdrantStandIn:
        """Serve (again, on the same port after a stop)."""
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def _serve(self) -> None:
                stand_in.requests += 1
                if stand_in.mode == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if stand_in.mode == "hang":
                    stand_in._release.wait(30)
                    self.close_connection = True
                    return
                key = self.headers.get("api-key")
                stand_in.seen_keys.append(key)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                if stand_in.api_key is not None and key != stand_in.api_key:
                    code, out = 401, {"status": {"error": "Invalid api-key"}}
                else:
                    code, out = stand_in.answer(self.command, self.path.split("?")[0], body)
                data = json.dumps(out).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _serve

        ThreadingHTTPServer.allow_reuse_address = True
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*map(str, self.tls))
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = int(server.server_address[1])
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def fault(self, mode: str) -> None:
        """ "drop": accept connections and close them; "hang": accept and never answer."""
        self._release.clear()
        self.mode = mode

    def heal(self) -> None:
        self.mode = "up"
        self._release.set()

    def stop(self) -> None:
        """Close the port: connections are refused, as after a kill."""
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def stand_in_qdrant() -> Iterator[QdrantStandIn]:
    """A stand-in for a Qdrant server (see QdrantStandIn)."""
    server = QdrantStandIn(api_key="stand-in-key").start()
    yield server
    server.stop()


def _qdrant_settings(
    checkpoint: Path, tmp_path: Path, url: str, api_key: str | None = "stand-in-key", **store: Any
) -> Any:
    return load_settings(
        None,
        common={
            "model": {"checkpoint": str(checkpoint)},
            "store": {"kind": "qdrant", "url": url, "api_key": api_key, "timeout_s": 1, **store},
        },
        server={"grpc_port": 0, "metrics_port": None, "shutdown_grace_s": 1},
    )


# --- RPC helpers ------------------------------------------------------------------------


def _timed_search(address: str) -> tuple[grpc.StatusCode, str, float]:
    """Search once: (code, details, seconds)."""
    t0 = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        try:
            rgrpc.RankerStub(channel).Search(rpb.SearchRequest(query=QUERIES[0]), timeout=30)
            return grpc.StatusCode.OK, "", time.monotonic() - t0
        except grpc.RpcError as err:
            return err.code(), err.details() or "", time.monotonic() - t0


def _timed_ingest(address: str, items: list[ipb.IngestItem]) -> tuple[list[Any], float]:
    """Ingest `items`: (per-item results, seconds)."""
    t0 = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        results = list(igrpc.ImageEncoderStub(channel).Ingest(iter(items), timeout=30))
    return results, time.monotonic() - t0


def _assert_unavailable_fast(address: str, items: list[ipb.IngestItem], mention: str) -> None:
    code, details, took = _timed_search(address)
    assert code == UNAVAILABLE, (code, details)
    assert mention in details, details
    assert took < FAST_S, f"Search took {took:.2f}s to fail"
    results, took = _timed_ingest(address, items)
    assert [r.id for r in results] == [i.id for i in items]
    assert all(not r.stored and r.code == UNAVAILABLE.value[0] for r in results), results
    assert mention in results[0].message, results[0].message
    assert took < FAST_S, f"Ingest took {took:.2f}s to fail"


def _search_hits(address: str) -> list[tuple[str, float]]:
    with grpc.insecure_channel(address) as channel:
        response = rgrpc.RankerStub(channel).Search(
            rpb.SearchRequest(query=QUERIES[0], top_k=20), timeout=30
        )
    return [(h.id, h.score) for h in response.hits]


def _ingest_ok(address: str, items: list[ipb.IngestItem]) -> None:
    results, _ = _timed_ingest(address, items)
    assert all(r.stored for r in results), [r.message for r in results]


# --- Triton killed and restarted ----------------------------------------------------------


def test_triton_down_at_start_killed_and_restarted(
    checkpoint: Path,
    repository: Path,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
) -> None:
    """The platform starts before Triton (NOT_SERVING at once), serves once Triton is up,
    survives a SIGKILL of Triton and its backend stubs, and resumes when it is restarted."""
    ports = (free_port(), free_port(), free_port())
    url = f"127.0.0.1:{ports[0]}"
    running = start(_triton_settings(checkpoint, repository, url, tmp_path))
    triton = TritonServer(repository, ports=ports)
    try:
        address, items = running.address, _items()
        assert _health(address) == NOT_SERVING  # as soon as start() returns
        assert _health(address, "liveness") == SERVING
        _assert_unavailable_fast(address, items[:2], f"inference: Triton at {url}")

        triton.start()
        _wait_health(address, SERVING, within=6)
        _ingest_ok(address, items[3:])
        before = _search_hits(address)

        assert triton.pid is not None
        os.killpg(triton.pid, signal.SIGKILL)  # the server and its python backend stubs
        triton.stop()  # reaps it; the ports are free again
        _assert_unavailable_fast(address, items[:4], f"inference: Triton at {url}")
        _wait_health(address, NOT_SERVING, within=4)
        assert _health(address, "liveness") == SERVING
        _assert_unavailable_fast(address, items[:2], "inference: Triton at")  # still fast

        triton = TritonServer(repository, ports=ports).start()
        _wait_health(address, SERVING, within=6)
        _assert_same_hits(_search_hits(address), before)
        _ingest_ok(address, items[:3])  # writes resume too
        assert len(_search_hits(address)) == len(items)
    finally:
        running.stop(0)
        triton.stop()


# --- the store's server unreachable -------------------------------------------------------


def test_stand_in_qdrant_gone_refusing_silent_and_back(
    checkpoint: Path, tmp_path: Path, stand_in_qdrant: QdrantStandIn
) -> None:
    """Against the Qdrant stand-in: stopped (refused), dropping connections, accepting and not
    answering; each gives UNAVAILABLE fast and NOT_SERVING, then service resumes."""
    running = start(_qdrant_settings(checkpoint, tmp_path, stand_in_qdrant.url))
    try:
        address, items = running.address, _items()[3:]
        _ingest_ok(address, items)
        before = _search_hits(address)
        assert [h for h, _ in before] and _health(address) == SERVING
        assert set(stand_in_qdrant.seen_keys) == {"stand-in-key"}  # every request had the key

        for fault in ("stop", "drop", "hang"):
            if fault == "stop":
                stand_in_qdrant.stop()
            else:
                stand_in_qdrant.fault(fault)
            _assert_unavailable_fast(address, items[:2], "vector store: Qdrant")
            _wait_health(address, NOT_SERVING, within=4)
            assert _health(address, "liveness") == SERVING
            if fault == "stop":
                stand_in_qdrant.start()  # same port, same data
            else:
                stand_in_qdrant.heal()
            _wait_health(address, SERVING, within=6)
            _assert_same_hits(_search_hits(address), before)
        _ingest_ok(address, items[:2])
    finally:
        running.stop(0)


def test_start_with_the_store_unreachable_fails_fast(
    checkpoint: Path, tmp_path: Path, stand_in_qdrant: QdrantStandIn
) -> None:
    """Nothing listening, or a stand-in that drops every connection: start() raises
    StoreUnavailable at once (the process exits; its orchestrator restarts it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    stand_in_qdrant.fault("drop")
    for url in (closed, stand_in_qdrant.url):
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="Qdrant unreachable"):
            start(_qdrant_settings(checkpoint, tmp_path, url))
        assert time.monotonic() - t0 < 5 + FAST_S  # model load (in-process) + one failed call
