"""The public API's door: API keys and roles, key reloads, rate limits, admission limits that
keep health and searches answering, TLS and mTLS, and refusing to serve an open non-loopback
address. Real servers on 127.0.0.1, real TLS handshakes."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from services.config import ServerCfg, load_settings
from services.main import RunningApp, start
from services.security import keys as keys_module
from services.security.keys import hash_key, new_key, parse_keys
from services.server import check_exposure
from teran_client import ChannelSecurity, TeranClient, TeranError
from teran_client.channels import open_channel
from teran_protos.v1 import admin_pb2, admin_pb2_grpc
from teran_protos.v1 import image_encoder_pb2 as ipb
from teran_protos.v1 import image_encoder_pb2_grpc as igrpc
from teran_protos.v1 import ranker_pb2 as rpb
from teran_protos.v1 import ranker_pb2_grpc as rgrpc

KEYS = {"searcher": ["search"], "loader": ["ingest"], "root": ["admin", "search", "ingest"]}


def _write_keys(path: Path, keys: dict[str, tuple[str, list[str]]], **extra: Any) -> None:
    entries = [
        {"name": name, "sha256": hash_key(key), "roles": roles, **extra.get(name, {})}
        for name, (key, roles) in keys.items()
    ]
    path.write_text(yaml.safe_dump({"keys": entries}))


def _settings(checkpoint: Path, store: Path, server: dict[str, Any]) -> Any:
    return load_settings(
        None,
        common={"model": {"checkpoint": str(checkpoint)}, "store": {"path": str(store)}},
        server={"grpc_port": 0, "metrics_port": None, "shutdown_grace_s": 1, **server},
    )


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("keys")
    keys = {name: (new_key(), roles) for name, roles in KEYS.items()}
    keys["limited"] = (new_key(), ["search"])
    path = folder / "keys.yaml"
    extra = {"limited": {"rate_per_s": 0.5, "burst": 2}}
    _write_keys(path, keys, **extra)
    return {
        "path": path,
        "keys": {name: key for name, (key, _) in keys.items()},
        "all": keys,
        "extra": extra,
    }


@pytest.fixture(scope="module")
def server(
    checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, secrets: dict[str, Any]
) -> Iterator[RunningApp]:
    limits = {"max_concurrent_rpcs": 8, "max_open_streams": 3, "stream_idle_s": 2.0}
    running = start(
        _settings(
            checkpoint,
            tmp_path_factory.mktemp("store"),
            {"auth": {"keys_file": str(secrets["path"])}, "limits": limits},
        )
    )
    yield running
    running.stop(0)


def _channel(server: RunningApp, key: str | None) -> grpc.Channel:
    return open_channel(server.address, ChannelSecurity(api_key=key))


def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def _counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _await_count(method: str, code: str, before: float, timeout_s: float = 20.0) -> None:
    """Until the RPC counter passes `before`: the handler notices within a second (the rest is
    slack for a loaded machine); the caller asserts the final count."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _counter("teran_rpc_requests_total", method=method, code=code) > before:
            return
        time.sleep(0.05)


def test_keys_and_roles_decide_who_calls_what(server: RunningApp, secrets: dict[str, Any]) -> None:
    keys = secrets["keys"]
    search = rpb.SearchRequest(query="a red circle", top_k=3)
    denied_before = _counter(
        "teran_auth_failures_total", method="Search", reason="permission_denied"
    )
    with _channel(server, None) as anonymous:
        assert _code(lambda: rgrpc.RankerStub(anonymous).Search(search)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        # health stays open for probes and load balancers
        status = health_pb2_grpc.HealthStub(anonymous).Check(health_pb2.HealthCheckRequest())
        assert status.status == health_pb2.HealthCheckResponse.SERVING
    with _channel(server, "teran_not-a-key") as stranger:
        assert _code(lambda: rgrpc.RankerStub(stranger).Stats(rpb.StatsRequest())) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    with _channel(server, keys["searcher"]) as searcher:
        rgrpc.RankerStub(searcher).Search(search)
        rgrpc.RankerStub(searcher).Stats(rpb.StatsRequest())
        delete = rpb.DeleteRequest(image_ids=["x"])
        assert _code(lambda: rgrpc.RankerStub(searcher).Delete(delete)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        status_call = admin_pb2_grpc.AdminStub(searcher).Status
        assert _code(lambda: status_call(admin_pb2.StatusRequest())) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        ingest = igrpc.ImageEncoderStub(searcher).Ingest
        assert _code(lambda: list(ingest(iter([ipb.IngestItem(id="a")])))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    with _channel(server, keys["loader"]) as loader:
        assert _code(lambda: rgrpc.RankerStub(loader).Search(search)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert rgrpc.RankerStub(loader).Delete(rpb.DeleteRequest(image_ids=["x"])).not_found
    with _channel(server, keys["root"]) as root:
        assert admin_pb2_grpc.AdminStub(root).Status(admin_pb2.StatusRequest()).live_version
    assert (
        _counter("teran_auth_failures_total", method="Search", reason="permission_denied")
        == denied_before + 1
    )


def test_reflection_is_for_admin_keys_only(server: RunningApp, secrets: dict[str, Any]) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    def services(key: str) -> list[str]:
        with _channel(server, key) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            answer = next(iter(stub.ServerReflectionInfo(iter([request]))))
            return [s.name for s in answer.list_services_response.service]

    assert "teran.v1.Ranker" in services(secrets["keys"]["root"])
    with pytest.raises(grpc.RpcError) as info:
        services(secrets["keys"]["searcher"])
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_keys_reload_without_restart_and_a_bad_edit_keeps_the_old_ones(
    server: RunningApp, secrets: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys_module, "RELOAD_CHECK_S", 0.0)
    path: Path = secrets["path"]
    original = path.read_text()
    fresh = new_key()
    stats = rpb.StatsRequest()
    try:
        with _channel(server, fresh) as channel:
            stub = rgrpc.RankerStub(channel)
            assert _code(lambda: stub.Stats(stats)) == grpc.StatusCode.UNAUTHENTICATED
            _write_keys(path, {**secrets["all"], "fresh": (fresh, ["search"])}, **secrets["extra"])
            stub.Stats(stats)  # added: accepted at once
            path.write_text("keys: [this is not: a valid entry")
            stub.Stats(stats)  # a broken file keeps the previous keys
            _write_keys(path, secrets["all"], **secrets["extra"])
            assert _code(lambda: stub.Stats(stats)) == grpc.StatusCode.UNAUTHENTICATED  # revoked
    finally:
        path.write_text(original)
        server.app.server.keys.lookup("")  # type: ignore[union-attr]  # re-read while at 0 s


def test_a_key_over_its_rate_is_refused(server: RunningApp, secrets: dict[str, Any]) -> None:
    with _channel(server, secrets["keys"]["limited"]) as channel:
        stub = rgrpc.RankerStub(channel)
        stub.Stats(rpb.StatsRequest())
        stub.Stats(rpb.StatsRequest())  # the burst of 2
        with pytest.raises(grpc.RpcError) as info:
            stub.Stats(rpb.StatsRequest())
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate" in info.value.details() and "limited" in info.value.details()
    with _channel(server, secrets["keys"]["searcher"]) as other:
        rgrpc.RankerStub(other).Stats(rpb.StatsRequest())  # other keys are not affected


def test_idle_streams_cannot_stall_searches_or_health(
    server: RunningApp, secrets: dict[str, Any]
) -> None:
    """Ingest streams that never send used to hold every server thread; now past
    `max_open_streams` (3 here) a stream is refused, and everything else goes on."""
    keys = secrets["keys"]
    release = threading.Event()

    def silent() -> Iterator[ipb.IngestItem]:
        release.wait(30)
        return
        yield  # pragma: no cover

    with _channel(server, keys["root"]) as channel:
        stub = igrpc.ImageEncoderStub(channel)
        calls = [stub.Ingest(silent(), timeout=30) for _ in range(12)]
        try:
            exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
            deadline = time.monotonic() + 10
            refused: list[Any] = []
            while time.monotonic() < deadline and len(refused) < 9:
                refused = [c for c in calls if c.done() and c.code() == exhausted]
                time.sleep(0.05)
            assert len(refused) == 9, "every stream past the limit is refused at once"
            assert "max_open_streams" in refused[0].details()
            started = time.monotonic()
            rgrpc.RankerStub(channel).Search(rpb.SearchRequest(query="a blue square"), timeout=5)
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            assert time.monotonic() - started < 5
        finally:
            release.set()
            for call in calls:
                call.cancel()


def test_an_idle_stream_is_closed_after_answering_what_it_sent(
    server: RunningApp, secrets: dict[str, Any]
) -> None:
    hold = threading.Event()

    def one_then_silence() -> Iterator[ipb.IngestItem]:
        yield ipb.IngestItem(id="early")  # no source: its own failure comes back first
        hold.wait(30)

    with _channel(server, secrets["keys"]["root"]) as channel:
        for _ in range(20):  # streams the previous test cancelled take a moment to close
            started = time.monotonic()
            call = igrpc.ImageEncoderStub(channel).Ingest(one_then_silence(), timeout=20)
            answered: list[str] = []
            with pytest.raises(grpc.RpcError) as info:
                answered.extend(r.id for r in call)
            if info.value.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                break
            time.sleep(0.25)
        hold.set()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "stream_idle_s" in info.value.details()
    assert answered == ["early"]
    assert 1.5 < time.monotonic() - started < 15


def test_undecodable_requests_are_the_callers_mistake(
    server: RunningApp, secrets: dict[str, Any]
) -> None:
    before = _counter("teran_rpc_requests_total", method="Search", code="INVALID_ARGUMENT")
    with _channel(server, secrets["keys"]["searcher"]) as channel:
        raw = channel.unary_unary("/teran.v1.Ranker/Search")  # bytes in, bytes out
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\xff\xff\xff\xff not a protobuf")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("request:")
    after = _counter("teran_rpc_requests_total", method="Search", code="INVALID_ARGUMENT")
    assert after == before + 1


def test_a_cancelled_stream_is_counted_as_cancelled(
    server: RunningApp, secrets: dict[str, Any]
) -> None:
    before = _counter("teran_rpc_requests_total", method="Ingest", code="CANCELLED")
    hold = threading.Event()

    def one_then_wait() -> Iterator[ipb.IngestItem]:
        yield ipb.IngestItem(id="lonely")  # no source: fails alone, the stream goes on
        hold.wait(10)

    with _channel(server, secrets["keys"]["root"]) as channel:
        call = igrpc.ImageEncoderStub(channel).Ingest(one_then_wait())
        first = next(call)
        assert not first.stored
        call.cancel()
        hold.set()
    _await_count("Ingest", "CANCELLED", before)
    # at least: streams an earlier test cancelled may be counted meanwhile, as they should
    assert _counter("teran_rpc_requests_total", method="Ingest", code="CANCELLED") >= before + 1


def test_the_python_client_sends_its_key(server: RunningApp, secrets: dict[str, Any]) -> None:
    with TeranClient(server.address, api_key=secrets["keys"]["searcher"]) as client:
        assert client.stats().images >= 0
    with TeranClient(server.address) as client, pytest.raises(TeranError) as info:
        client.stats()
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_keys_file_entries_are_checked() -> None:
    good = hash_key("k")
    with pytest.raises(ValueError, match=r"keys\[0\]\.sha256"):
        parse_keys(yaml.safe_dump({"keys": [{"name": "a", "sha256": "abc"}]}), "f")
    with pytest.raises(ValueError, match=r"keys\[0\]\.roles"):
        parse_keys(yaml.safe_dump({"keys": [{"sha256": good, "roles": ["root"]}]}), "f")
    with pytest.raises(ValueError, match="unique"):
        twice = [{"name": "a", "sha256": good}, {"name": "a", "sha256": good}]
        parse_keys(yaml.safe_dump({"keys": twice}), "f")


def test_an_open_non_loopback_address_needs_allow_insecure(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    check_exposure(ServerCfg(host="127.0.0.1"))
    check_exposure(ServerCfg(host="::1"))
    with pytest.raises(ValueError, match="allow_insecure"):
        check_exposure(ServerCfg(host="0.0.0.0"))
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys: []\n")
    with pytest.raises(ValueError, match="TLS"):
        check_exposure(ServerCfg.model_validate({"host": "0.0.0.0", "auth": {"keys_file": keys}}))
    with caplog.at_level(logging.WARNING):
        check_exposure(
            ServerCfg.model_validate({"host": "0.0.0.0", "auth": {"allow_insecure": True}})
        )
    assert sum("INSECURE" in r.message for r in caplog.records) == 2


# --- TLS ---------------------------------------------------------------------------------


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate(
    name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, ca: bool = False
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    signer = issuer[1] if issuer else key
    return builder.sign(signer, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca = _certificate("teran test CA", None, ca=True)
    files: dict[str, Path] = {}
    for name, (cert, key) in {
        "ca": ca,
        "server": _certificate("server", ca),
        "client": _certificate("client", ca),
    }.items():
        files[f"{name}.crt"] = folder / f"{name}.crt"
        files[f"{name}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{name}.key"] = folder / f"{name}.key"
        files[f"{name}.key"].write_bytes(_key_pem(key))
    return files


def test_tls_and_mtls(
    checkpoint: Path, tmp_path: Path, pki: dict[str, Path], secrets: dict[str, Any]
) -> None:
    tls = {
        "cert_file": str(pki["server.crt"]),
        "key_file": str(pki["server.key"]),
        "client_ca_file": str(pki["ca.crt"]),
    }
    running = start(
        _settings(
            checkpoint,
            tmp_path / "store",
            {"tls": tls, "auth": {"keys_file": str(secrets["path"])}, "health_port": 0},
        )
    )
    key = secrets["keys"]["searcher"]
    try:
        mutual = ChannelSecurity(
            api_key=key,
            ca_file=pki["ca.crt"],
            cert_file=pki["client.crt"],
            key_file=pki["client.key"],
        )
        with TeranClient(running.address, security=mutual, timeout_s=10) as client:
            assert client.stats().images == 0
        # a plaintext client, and a TLS client without a certificate, get no answer
        for security in (
            ChannelSecurity(api_key=key),
            ChannelSecurity(api_key=key, ca_file=pki["ca.crt"]),
        ):
            with TeranClient(running.address, security=security, timeout_s=5) as client:
                with pytest.raises(TeranError) as info:
                    client.stats()
                assert info.value.code == grpc.StatusCode.UNAVAILABLE
        # kubelet's probes: plaintext health on its own port, nothing else there
        assert running.app.server.health_port
        with grpc.insecure_channel(f"127.0.0.1:{running.app.server.health_port}") as plain:
            answer = health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest())
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as refused:
                rgrpc.RankerStub(plain).Stats(rpb.StatsRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        running.stop(0)


def test_an_oversize_request_is_refused_with_its_size_and_counted(
    server: RunningApp, secrets: dict[str, Any]
) -> None:
    before = _counter("teran_rpc_requests_total", method="Search", code="RESOURCE_EXHAUSTED")
    limit = server.app.settings.server.max_message_mb << 20
    request = rpb.SearchRequest(query="a" * (limit + 10))
    with (
        _channel(server, secrets["keys"]["searcher"]) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        rgrpc.RankerStub(channel).Search(request)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server.max_message_mb" in info.value.details()
    after = _counter("teran_rpc_requests_total", method="Search", code="RESOURCE_EXHAUSTED")
    assert after == before + 1


def test_services_authenticate_to_each_other_with_the_service_key(
    checkpoint: Path, tmp_path: Path, secrets: dict[str, Any]
) -> None:
    """Split mode: a text encoder that takes keys only, a ranker that reaches it with its
    service key; without the key the ranker's searches are UNAVAILABLE, never INTERNAL."""
    keys = {"keys_file": str(secrets["path"])}
    text = start(
        load_settings(
            None,
            target="text_encoder",
            common={
                "model": {"checkpoint": str(checkpoint)},
                "store": {"path": str(tmp_path / "t")},
            },
            server={"grpc_port": 0, "metrics_port": None, "auth": keys},
        )
    )
    service_key = tmp_path / "service-key"
    service_key.write_text(secrets["keys"]["searcher"] + "\n")
    try:
        for key_file, expected in (
            (service_key, grpc.StatusCode.OK),
            (None, grpc.StatusCode.UNAVAILABLE),
        ):
            search = start(
                load_settings(
                    None,
                    target="search",
                    common={"model": {"checkpoint": str(checkpoint)},
                            "store": {"path": str(tmp_path / f"s{expected.name}")}},
                    server={"grpc_port": 0, "metrics_port": None,
                            "auth": {**keys, "service_key_file": key_file}},
                    ranker={"text_encoder_url": text.address},
                )
            )  # fmt: skip
            try:
                with _channel(search, secrets["keys"]["searcher"]) as channel:
                    stub = rgrpc.RankerStub(channel)
                    request = rpb.SearchRequest(query="a red circle")
                    if expected == grpc.StatusCode.OK:
                        assert stub.Search(request, timeout=10).model_version
                    else:
                        with pytest.raises(grpc.RpcError) as info:
                            stub.Search(request, timeout=10)
                        assert info.value.code() == expected
                        assert "service_key_file" in info.value.details()
            finally:
                search.stop(0)
    finally:
        text.stop(0)


def test_a_stream_past_its_deadline_is_counted_as_deadline_exceeded(
    server: RunningApp, secrets: dict[str, Any]
) -> None:
    before = _counter("teran_rpc_requests_total", method="Ingest", code="DEADLINE_EXCEEDED")
    hold = threading.Event()

    def one_then_wait() -> Iterator[ipb.IngestItem]:
        yield ipb.IngestItem(id="late")
        hold.wait(10)

    with _channel(server, secrets["keys"]["root"]) as channel:
        call = igrpc.ImageEncoderStub(channel).Ingest(one_then_wait(), timeout=1.0)
        with pytest.raises(grpc.RpcError) as info:
            list(call)
        hold.set()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    _await_count("Ingest", "DEADLINE_EXCEEDED", before)
    assert _counter("teran_rpc_requests_total", method="Ingest", code="DEADLINE_EXCEEDED") == (
        before + 1
    )
