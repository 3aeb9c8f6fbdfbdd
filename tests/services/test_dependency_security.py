"""The channels to the dependencies: Triton over (mutual) TLS with its restricted-protocol key
header, and Qdrant over https with a private CA and an api key.

Triton is the real tritonserver of nvidia-pytriton with `--grpc-use-ssl-mutual` and
`--grpc-restricted-protocol`, certificates from a test CA. No Qdrant server can run here: the
Qdrant part runs against `QdrantStandIn` (tests/services/test_faults.py), standing in for a Qdrant
server behind TLS that checks the api-key header.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from pydantic import ValidationError

from services.config import InferenceCfg, ModelCfg, StoreCfg, load_settings
from services.inference.base import InferenceUnavailable
from services.inference.triton import TritonBackend, TritonChannel
from services.main import start
from services.store.factory import build_store, qdrant_client
from services.store.interface import StoreUnavailable
from teran.tritonserver import TritonServer
from teran_protos.v1 import ranker_pb2 as rpb
from teran_protos.v1 import ranker_pb2_grpc as rgrpc
from tests.services.test_faults import QdrantStandIn, _search_hits
from tests.services.test_security import pki  # noqa: F401 (fixture: a test CA, server and client)
from tests.services.test_triton_services import (
    NOT_SERVING,
    QUERIES,
    SERVING,
    _health,
    _ingest,
    _items,
    _wait_health,
    repository,  # noqa: F401 (fixture)
)

pytestmark = pytest.mark.filterwarnings("ignore:Failed to obtain server version")

SECRET = "s3cret-triton-key-7f1d"
HEADER = "triton-grpc-protocol-x-teran-key"
"""Triton checks its restricted-protocol key `x-teran-key` in this header."""
QDRANT_KEY = "s3cret-qdrant-key-0a9e"


@pytest.fixture(scope="module")
def triton_tls(repository: Path, pki: dict[str, Path]) -> Iterator[TritonServer]:  # noqa: F811
    """One tritonserver for the module: mutual TLS, every protocol behind the key header."""
    args = (
        "--grpc-use-ssl-mutual=true",
        f"--grpc-server-cert={pki['server.crt']}",
        f"--grpc-server-key={pki['server.key']}",
        f"--grpc-root-cert={pki['ca.crt']}",
        f"--grpc-restricted-protocol=health,metadata,inference:x-teran-key={SECRET}",
    )
    server = TritonServer(repository, extra_args=args).start()
    yield server
    server.stop()


def _channel(files: dict[str, Path], headers: dict[str, str], cert: bool = True) -> TritonChannel:
    return TritonChannel(
        tls=True,
        ca_file=files["ca.crt"],
        cert_file=files["client.crt"] if cert else None,
        key_file=files["client.key"] if cert else None,
        headers=headers,
    )


def _tokens() -> tuple[np.ndarray, np.ndarray]:
    return np.array([[101, 2000, 102]], np.int64), np.array([3])


def test_triton_over_mutual_tls_with_the_key_header(
    checkpoint: Path,
    repository: Path,  # noqa: F811
    triton_tls: TritonServer,
    pki: dict[str, Path],  # noqa: F811
) -> None:
    model = ModelCfg(checkpoint=checkpoint, repository=repository)
    backend = TritonBackend(triton_tls.grpc_url, model, channel=_channel(pki, {HEADER: SECRET}))
    try:
        assert backend.healthy()
        words = backend.encode_text(*_tokens())
        assert words.shape[:2] == (1, 3) and np.isfinite(words).all()
    finally:
        backend.close()


@pytest.mark.parametrize(
    "case", ["no header", "wrong key", "no client certificate", "plaintext", "tls, no ca"]
)
def test_triton_refusals_are_unavailable_not_a_crash(
    checkpoint: Path,
    repository: Path,  # noqa: F811
    triton_tls: TritonServer,
    pki: dict[str, Path],  # noqa: F811
    case: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = {
        "no header": _channel(pki, {}),
        "wrong key": _channel(pki, {HEADER: "not-" + SECRET}),
        "no client certificate": _channel(pki, {HEADER: SECRET}, cert=False),
        "plaintext": TritonChannel(headers={HEADER: SECRET}),
        "tls, no ca": TritonChannel(tls=True, headers={HEADER: SECRET}),  # system roots
    }[case]
    model = ModelCfg(checkpoint=checkpoint, repository=repository)
    with caplog.at_level(logging.INFO):
        backend = TritonBackend(triton_tls.grpc_url, model, channel=channel)  # starts anyway
        try:
            assert not backend.healthy()
            with pytest.raises(InferenceUnavailable) as info:
                backend.encode_text(*_tokens())
        finally:
            backend.close()
    message = str(info.value)
    assert triton_tls.grpc_url in message
    if case in ("no header", "wrong key"):
        assert "restricted" in message, message  # TLS worked; the key header did not
    assert SECRET not in message and SECRET not in caplog.text
    assert SECRET not in repr(channel)


def test_platform_over_triton_tls_with_headers_from_the_environment(
    checkpoint: Path,
    repository: Path,  # noqa: F811
    triton_tls: TritonServer,
    pki: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    inference = {
        "backend": "triton",
        "triton_url": triton_tls.grpc_url,
        "triton_tls": True,
        "triton_ca_file": str(pki["ca.crt"]),
        "triton_cert_file": str(pki["client.crt"]),
        "triton_key_file": str(pki["client.key"]),
    }

    def settings(store: str) -> object:
        return load_settings(
            None,
            common={
                "model": {"checkpoint": str(checkpoint), "repository": str(repository)},
                "inference": inference,
                "store": {"path": str(tmp_path / store)},
            },
            server={"grpc_port": 0, "metrics_port": None, "shutdown_grace_s": 1},
        )

    monkeypatch.setenv("TERAN_COMMON__INFERENCE__TRITON_HEADERS", f'{{"{HEADER}": "{SECRET}"}}')
    good = settings("good")
    assert SECRET not in repr(good) and SECRET not in str(good.model_dump())  # type: ignore[attr-defined]
    monkeypatch.setenv("TERAN_COMMON__INFERENCE__TRITON_HEADERS", f'{{"{HEADER}": "wrong"}}')
    bad = settings("bad")
    with caplog.at_level(logging.INFO):
        running = start(good)  # type: ignore[arg-type]
        refused = start(bad)  # type: ignore[arg-type]
    try:
        _ingest(running.address, _items()[3:])
        assert len(_search_hits(running.address)) == 6
        assert _health(running.address) == SERVING
        # the wrong key: started, NOT_SERVING, searches UNAVAILABLE; the key never shown
        assert _health(refused.address) == NOT_SERVING
        with (
            grpc.insecure_channel(refused.address) as channel,
            pytest.raises(grpc.RpcError) as info,
        ):
            rgrpc.RankerStub(channel).Search(rpb.SearchRequest(query=QUERIES[0]), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "restricted" in (info.value.details() or "")
        _wait_health(refused.address, NOT_SERVING, within=1)
    finally:
        running.stop(0)
        refused.stop(0)
    assert SECRET not in caplog.text


def test_triton_channel_settings_are_validated() -> None:
    for bad, message in (
        ({"triton_ca_file": "ca.crt"}, "need triton_tls"),
        ({"triton_tls": True, "triton_cert_file": "c.crt"}, "together"),
        ({"triton_headers": {"X-Upper": "v"}}, "not a gRPC header name"),
        ({"triton_headers": {"grpc-timeout": "v"}}, "not a gRPC header name"),
        ({"triton_headers": {"k": "line\nbreak"}}, "printable ASCII"),
    ):
        with pytest.raises(ValidationError, match=message):
            InferenceCfg(**bad)
    channel = TritonChannel(tls=True, ca_file=Path("/nonexistent/ca.crt"))
    with pytest.raises(ValueError, match="triton_ca_file"):
        channel.credentials()


# --- Qdrant (a stand-in for the server) ---------------------------------------------------


@pytest.fixture
def stand_in_qdrant_tls(pki: dict[str, Path]) -> Iterator[QdrantStandIn]:  # noqa: F811
    """A stand-in for a Qdrant server behind TLS that checks the api-key header."""
    server = QdrantStandIn(api_key=QDRANT_KEY, tls=(pki["server.crt"], pki["server.key"]))
    yield server.start()
    server.stop()


def test_stand_in_qdrant_https_ca_and_api_key_reach_the_server(
    stand_in_qdrant_tls: QdrantStandIn,
    pki: dict[str, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """https://, the private CA and the api key (from the environment) reach qdrant-client and,
    over a real TLS handshake, the stand-in; a wrong key or an unknown CA is UNAVAILABLE."""
    monkeypatch.setenv("TERAN_COMMON__STORE__API_KEY", QDRANT_KEY)
    url = stand_in_qdrant_tls.url
    assert url.startswith("https://")
    store_cfg = {"kind": "qdrant", "url": url, "ca_file": str(pki["ca.crt"]), "timeout_s": 2}
    cfg = load_settings(None, common={"model": {"checkpoint": "x"}, "store": store_cfg})
    assert QDRANT_KEY not in repr(cfg)
    store = build_store(cfg.common.store, [("v1", 4)])
    try:
        assert store.healthy() and store.live_version() == "v1"
    finally:
        store.close()
    assert stand_in_qdrant_tls.requests > 0
    assert set(stand_in_qdrant_tls.seen_keys) == {QDRANT_KEY}

    wrong = cfg.common.store.model_copy(update={"api_key": None})
    with pytest.raises(StoreUnavailable, match=r"refused.*api_key"):
        build_store(wrong, [("v1", 4)])
    no_ca = cfg.common.store.model_copy(update={"ca_file": None})
    with pytest.raises(StoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        build_store(no_ca, [("v1", 4)])
    with pytest.raises(ValidationError, match="ca_file needs an https"):
        StoreCfg(kind="qdrant", url="http://q:6333", ca_file=pki["ca.crt"])


def test_stand_in_qdrant_settings_reach_qdrant_client(pki: dict[str, Path]) -> None:  # noqa: F811
    """Stands in for a Qdrant cluster's gRPC port: the CA and the key are in the client's gRPC
    options too (qdrant-client's prefer_grpc path), and the timeout is the configured one."""
    cfg = StoreCfg(
        kind="qdrant", url="https://qdrant:6333", api_key=QDRANT_KEY, ca_file=pki["ca.crt"]
    )
    client = qdrant_client(cfg.model_copy(update={"timeout_s": 3}))
    remote: Any = client._client
    try:
        assert remote._https and remote.rest_uri.startswith("https://qdrant:6333")
        assert remote._rest_headers["api-key"] == QDRANT_KEY
        assert ("api-key", QDRANT_KEY) in remote._grpc_headers
        assert remote._grpc_options["root_certificates"] == pki["ca.crt"].read_bytes()
        assert remote._timeout == 3
    finally:
        client.close()
