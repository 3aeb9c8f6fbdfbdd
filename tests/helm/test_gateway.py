"""The HTTP gateway in the chart (values `gateway`, templates/gateway): its own Deployment,
Service, HorizontalPodAutoscaler and PodDisruptionBudget from the shared component template; its
config pointing at the ranker's and the image encoder's Services; HTTP probes on its health
routes; the NetworkPolicy; TLS to its upstream and HTTPS of its own with the chart's TLS; the
monolith's http port; nothing of it while disabled. Then the rendered configs run: the probes'
paths against a real gateway, and the secure set's gateway over mTLS to a keyed TLS server."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_python import HelmError, lint

from services.config import load_settings
from services.gateway.runner import check_gateway_exposure
from services.main import start
from services.modules import GATEWAY
from services.security.peers import peer_security
from services.server import GrpcServer
from teran_dev.launcher import merged
from tests.helm.chart import (
    CERT_MANAGER_CRDS,
    CHART,
    COMPONENT_LABEL,
    KUBE_VERSIONS,
    NAMESPACE,
    RELEASE,
    RELEASE_PEER,
    VALUE_SETS,
    Rendered,
    admits,
    container,
    port_of,
    render,
    secret_files,
)
from tests.helm.test_chart import kube_schemas  # noqa: F401  (fixture)
from tests.helm.test_security import SECRETS_DIR, _local, secrets_dir  # noqa: F401  (fixture)
from tests.services.http_helpers import call, start_gateway_alone

NAME = f"{RELEASE}-gateway"
ON: dict[str, Any] = {"gateway": {"enabled": True}}
KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget")
GATEWAY_LABELS = {
    "app.kubernetes.io/name": "teran",
    "app.kubernetes.io/instance": RELEASE,
    COMPONENT_LABEL: "gateway",
}
STRANGER = {"app.kubernetes.io/name": "browser"}
"""A pod of the namespace that is none of the release's (outside traffic, as far as a
NetworkPolicy of podSelector peers goes)."""


def with_gateway(value_set: str, **extra: Any) -> Rendered:
    return render(merged(VALUE_SETS[value_set], {**ON, **extra}), base={})


@pytest.fixture(scope="module")
def plain() -> Rendered:
    return render(ON)


@pytest.fixture(scope="module")
def secure() -> Rendered:
    return with_gateway("secure")


def _policies(r: Rendered) -> dict[str, dict[str, Any]]:
    return {
        p["spec"]["podSelector"]["matchLabels"][COMPONENT_LABEL]: p for p in r.of("NetworkPolicy")
    }


def _config_path(r: Rendered, path: Path, secrets: dict[str, Any] | None = None) -> Path:
    text = r.one("ConfigMap", RELEASE)["data"]["config.yaml"]
    path.write_text(_local(text, secrets) if secrets else text)
    return path


@pytest.fixture
def no_teran_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("TERAN_")]:
        monkeypatch.delenv(var)


# --- the rendered manifests ---------------------------------------------------------------


def test_the_gateway_is_a_component_of_its_own(plain: Rendered) -> None:
    dep = plain.one("Deployment", NAME)
    c = container(dep)
    assert c["args"] == ["--config", "/etc/teran/config.yaml", "--target", "gateway"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector == GATEWAY_LABELS
    for kind in KINDS:
        plain.one(kind, NAME)
    # the HPA owns the replica count; a budget of one pod at a time
    assert "replicas" not in dep["spec"]
    hpa = plain.one("HorizontalPodAutoscaler", NAME)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": NAME,
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    pdb = plain.one("PodDisruptionBudget", NAME)
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    # the http port on the Service instead of gRPC (its gRPC server answers health alone)
    svc = plain.one("Service", NAME)
    assert svc["spec"]["selector"] == selector
    assert {
        p["name"]: (p["port"], p["targetPort"], p["appProtocol"]) for p in svc["spec"]["ports"]
    } == {
        "http": (8080, "http", "http"),
        "metrics": (9464, "metrics", "http"),
    }
    assert {p["name"] for p in c["ports"]} == {"http", "metrics"}
    assert port_of(c, "http") == 8080
    # no model: no init container copying one, no model volume
    spec = dep["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    assert {v["name"] for v in spec["volumes"]} == {"config", "tmp", "cache"}
    assert c["resources"]["requests"] == {"cpu": "200m", "memory": "256Mi"}
    # replicas of its own with autoscaling off
    fixed = render(
        {"gateway": {"enabled": True, "replicaCount": 3, "autoscaling": {"enabled": False}}}
    )
    assert fixed.one("Deployment", NAME)["spec"]["replicas"] == 3
    assert NAME not in fixed.names("HorizontalPodAutoscaler")


def test_the_config_targets_the_ranker_and_the_image_encoder(
    plain: Rendered, tmp_path: Path, no_teran_env: None
) -> None:
    config = plain.config()["gateway"]
    assert config["upstream"] == f"{RELEASE}-ranker:50051"
    assert config["image_upstream"] == f"{RELEASE}-image-encoder:50051"
    for address in (config["upstream"], config["image_upstream"]):
        service, port = address.rsplit(":", 1)
        ports = {p["name"]: p["port"] for p in plain.one("Service", service)["spec"]["ports"]}
        assert ports["grpc"] == int(port), address
    settings = load_settings(_config_path(plain, tmp_path / "config.yaml"), target="gateway")
    gateway = settings.gateway
    assert (gateway.host, gateway.port) == (
        "0.0.0.0",
        port_of(container(plain.one("Deployment", NAME)), "http"),
    )
    assert (gateway.max_upload_bytes, gateway.timeout_s) == (16 << 20, 30)
    assert gateway.tls_cert_file is None and settings.server.auth.allow_insecure
    check_gateway_exposure(settings)  # plain HTTP on 0.0.0.0: allowed, loudly, by allowInsecure
    # the other targets still load the same file
    for target in ("ranker", "image_encoder", "text_encoder"):
        load_settings(tmp_path / "config.yaml", target=target)
    tuned = render({**ON, "config": {"gateway": {"timeout_s": 5}}}).config()["gateway"]
    assert tuned["timeout_s"] == 5 and tuned["upstream"] == config["upstream"]


def test_probes_get_the_gateways_health_routes(plain: Rendered, secure: Rendered) -> None:
    for r, scheme in ((plain, "HTTP"), (secure, "HTTPS")):
        c = container(r.one("Deployment", NAME))
        paths = {}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            check = c[probe]["httpGet"]
            assert "grpc" not in c[probe]
            assert (check["port"], check["scheme"]) == ("http", scheme), probe
            paths[probe] = check["path"]
        assert paths == {
            "startupProbe": "/healthz",
            "readinessProbe": "/readyz",
            "livenessProbe": "/healthz",
        }
    # the other services keep their gRPC probes
    ranker = container(plain.one("Deployment", f"{RELEASE}-ranker"))
    assert ranker["readinessProbe"]["grpc"] == {"port": 50051}


def test_network_policy_opens_the_http_port_and_lets_the_gateway_in(plain: Rendered) -> None:
    policies = _policies(plain)
    own = policies["gateway"]
    assert admits(own, STRANGER, "http")
    assert not admits(own, STRANGER, "grpc") and not admits(own, STRANGER, "metrics")
    assert own["spec"]["ingress"][1] == {
        "from": [RELEASE_PEER],
        "ports": [{"port": "metrics", "protocol": "TCP"}],
    }
    # the gateway's pods reach the ranker and the image encoder (ingest, uploads)
    assert admits(policies["ranker"], GATEWAY_LABELS, "grpc")
    assert admits(policies["image-encoder"], GATEWAY_LABELS, "grpc")
    assert not admits(policies["image-encoder"], STRANGER, "grpc")
    # the open rules: the ranker's gRPC port and the gateway's http port, nothing else
    open_rules = sorted(
        (component, [p["port"] for p in rule["ports"]])
        for component, policy in policies.items()
        for rule in policy["spec"]["ingress"]
        if not rule.get("from")
    )
    assert open_rules == [("gateway", ["http"]), ("ranker", ["grpc"])]


def test_secure_values_give_the_gateway_tls_to_its_upstream(secure: Rendered) -> None:
    """TLS on: the gateway calls the ranker and the image encoder over TLS trusting ca.crt and
    presenting the release's certificate (the encoders' mTLS), and serves HTTPS with it; the
    Certificate names the gateway's Service. No service key: each caller's key goes through."""
    dep = secure.one("Deployment", NAME)
    c = container(dep)
    tls = f"{SECRETS_DIR}/tls"
    assert secret_files(dep["spec"]["template"]["spec"], c) == {
        f"{SECRETS_DIR}/keys/keys.yaml": ("teran-api-keys", "keys.yaml"),
        f"{tls}/tls.crt": (f"{RELEASE}-tls", "tls.crt"),
        f"{tls}/tls.key": (f"{RELEASE}-tls", "tls.key"),
        f"{tls}/ca.crt": (f"{RELEASE}-tls", "ca.crt"),
    }
    assert {e["name"] for e in c["env"]} == {"HF_HOME", "XDG_CACHE_HOME"}
    config = secure.config()
    assert config["server"]["tls"]["peer_ca_file"] == f"{tls}/ca.crt"
    assert {k: config["gateway"][k] for k in ("tls_cert_file", "tls_key_file")} == {
        "tls_cert_file": f"{tls}/tls.crt",
        "tls_key_file": f"{tls}/tls.key",
    }
    (http,) = [p for p in secure.one("Service", NAME)["spec"]["ports"] if p["name"] == "http"]
    assert http["appProtocol"] == "https"
    names = secure.one("Certificate", f"{RELEASE}-tls")["spec"]["dnsNames"]
    assert {
        NAME,
        f"{NAME}.{NAMESPACE}",
        f"{NAME}.{NAMESPACE}.svc",
        f"{NAME}.{NAMESPACE}.svc.cluster.local",
    } <= set(names)
    notes = secure.files["teran/templates/NOTES.txt"]
    assert (
        f"port-forward svc/{NAME} 8080:8080" in notes and f"https://{NAME}:8080/v1/search" in notes
    )


def test_monolith_serves_the_gateway_on_its_service() -> None:
    """mode=monolith: `--target all` hosts the gateway; no Deployment of its own, the http port
    on the monolith's pod, Service and NetworkPolicy. With TLS its upstream is the monolith's
    Service (the certificate's name), so it mounts ca.crt."""
    for value_set, tls in (("monolith", True), ("defaults", False)):
        r = with_gateway(value_set, mode="monolith")
        assert not [d for d in r.docs if d["metadata"]["labels"].get(COMPONENT_LABEL) == "gateway"]
        dep = r.one("Deployment", f"{RELEASE}-monolith")
        c = container(dep)
        assert port_of(c, "http") == 8080 and c["args"][-2:] == ["--target", "all"]
        ports = {p["name"]: p for p in r.one("Service", f"{RELEASE}-monolith")["spec"]["ports"]}
        assert set(ports) == {"grpc", "http", "metrics"}
        assert ports["http"]["appProtocol"] == ("https" if tls else "http")
        policy = _policies(r)["monolith"]
        assert admits(policy, STRANGER, "http") and admits(policy, STRANGER, "grpc")
        config = r.config()
        gateway = config["gateway"]
        assert (gateway["host"], gateway["port"]) == ("0.0.0.0", 8080)
        files = secret_files(dep["spec"]["template"]["spec"], c)
        if tls:
            assert gateway["upstream"] == f"{RELEASE}-monolith:50051"
            assert gateway["tls_cert_file"] == config["server"]["tls"]["cert_file"]
            ca = config["server"]["tls"]["peer_ca_file"]
            assert files[ca] == ("teran-monolith-tls", "ca.crt")
        else:
            assert "upstream" not in gateway and "tls" not in config["server"]  # its own port


def test_disabling_the_gateway_removes_all_of_it(plain: Rendered) -> None:
    default, monolith = render({}), render({"mode": "monolith"})
    for off in (default, render({"gateway": {"enabled": False}}), monolith):
        labelled = [
            d for d in off.docs if d["metadata"]["labels"].get(COMPONENT_LABEL) == "gateway"
        ]
        assert labelled == []
        assert [f for f, text in off.files.items() if NAME in text] == []
        assert set(off.config()["gateway"]) == {"max_upload_bytes", "timeout_s"}  # no address
    # the monolith without its http port
    dep = monolith.one("Deployment", f"{RELEASE}-monolith")
    assert {p["name"] for p in container(dep)["ports"]} == {"grpc", "metrics"}
    ports = monolith.one("Service", f"{RELEASE}-monolith")["spec"]["ports"]
    assert {p["name"] for p in ports} == {"grpc", "metrics"}
    # on, exactly its own objects are added
    objects = {(d["kind"], d["metadata"]["name"]) for d in plain.docs}
    added = objects - {(d["kind"], d["metadata"]["name"]) for d in default.docs}
    assert added == {(kind, NAME) for kind in (*KINDS, "NetworkPolicy")}
    # and scraped with monitoring on
    monitored = render({**ON, "monitoring": {"enabled": True}}).one("ServiceMonitor", RELEASE)
    (expression,) = monitored["spec"]["selector"]["matchExpressions"]
    assert "gateway" in expression["values"]


@pytest.mark.usefixtures("kube_schemas")
@pytest.mark.parametrize("value_set", ["defaults", "secure", "monolith", "autoscaling-off"])
def test_gateway_manifests_validate_and_lint(value_set: str) -> None:
    values = merged(VALUE_SETS[value_set], ON)
    r = render(values, base={})
    for doc in r.docs:
        if doc["kind"] in CERT_MANAGER_CRDS:
            continue
        for version in (KUBE_VERSIONS[0], KUBE_VERSIONS[-1]):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on {version}: {e.message}")
    report = lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSIONS[-1]}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"gateway": {"enabled": "yes"}}, "/gateway/enabled"),
        ({"gateway": {"replicas": 2}}, "additional properties 'replicas'"),
        ({"gateway": {"service": {"port": 0}}}, "/gateway/service/port"),
        ({"ports": {"http": 70000}}, "/ports/http"),
        ({"config": {"gateway": {"upstream": "elsewhere:50051"}}}, "additional properties"),
        ({"config": {"gateway": {"timeout_s": 0}}}, "/config/gateway/timeout_s"),
    ],
)
def test_schema_rejects_gateway_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError, match="schema") as caught:
        render(values)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"gateway": {"enabled": True, "autoscaling": {"minReplicas": 4, "maxReplicas": 2}}},
            "gateway.autoscaling: minReplicas (4) is above maxReplicas (2)",
        ),
        (
            {"gateway": {"enabled": True}, "ports": {"http": 9464}},
            "ports.http (9464) is also ports.metrics",
        ),
    ],
)
def test_validate_refuses_gateway_mixes(values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError) as caught:
        render(values)
    assert "validate.yaml" in str(caught.value) and message in str(caught.value)


# --- the rendered configs, run --------------------------------------------------------------


def _get(url: str, ca: Path | None = None) -> tuple[int, Any]:
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    try:
        with urllib.request.urlopen(url, timeout=30, context=context) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_probe_paths_answer_on_a_real_gateway(plain: Rendered) -> None:
    """/healthz while the process runs, /readyz only while the ranker answers: with nothing
    upstream the pod is live but not ready."""
    c = container(plain.one("Deployment", NAME))
    running = start_gateway_alone()
    try:
        url = running.app.components[GATEWAY].url
        codes = {
            probe: call(url + c[probe]["httpGet"]["path"]).status
            for probe in ("livenessProbe", "startupProbe", "readinessProbe")
        }
    finally:
        running.stop(0)
    assert codes == {"livenessProbe": 200, "startupProbe": 200, "readinessProbe": 503}


def test_the_secure_gateway_serves_https_over_mtls(
    secure: Rendered,
    secrets_dir: dict[str, Any],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_teran_env: None,
) -> None:
    """The secure set's config with the Secrets' files made local: an image encoder's server
    (keys, TLS, client certificates required) stands in for the upstream; the gateway, as
    rendered but for the upstream's address and free ports, serves HTTPS with the release's
    certificate and its /readyz gets through the upstream's mTLS."""
    path = _config_path(secure, tmp_path / "config.yaml", secrets_dir)
    encoder_env = container(secure.one("Deployment", f"{RELEASE}-image-encoder"))["env"]
    with monkeypatch.context() as m:
        for var in encoder_env:
            if var["name"].startswith("TERAN_SERVER__"):
                m.setenv(var["name"], _local(var["value"], secrets_dir))
        encoder = load_settings(
            path, target="image_encoder", server={"grpc_port": 0, "health_port": 0}
        )
    assert encoder.server.tls.client_ca_file is not None
    upstream = GrpcServer(encoder.server)
    upstream.start()
    try:
        address = f"127.0.0.1:{upstream.port}"
        settings = load_settings(
            path,
            target="gateway",
            server={"grpc_port": 0, "health_port": 0, "metrics_port": None, "shutdown_grace_s": 0},
            gateway={"port": 0, "upstream": address, "image_upstream": address},
        )
        assert not settings.server.auth.allow_insecure and settings.gateway.host == "0.0.0.0"
        peer = peer_security(settings.server)
        assert peer.ca_file and peer.cert_file and peer.api_key is None
        running = start(settings)
        try:
            url = running.app.components[GATEWAY].url
            assert url.startswith("https://")
            local = url.replace("0.0.0.0", "127.0.0.1")
            ca = secrets_dir["tls"]["ca.crt"]
            assert _get(f"{local}/healthz", ca) == (200, {"status": "ok"})
            assert _get(f"{local}/readyz", ca) == (200, {"serving": True})
            with pytest.raises(urllib.error.URLError):  # HTTPS with the release's CA only
                _get(f"{local}/healthz", secrets_dir["stranger"]["client.crt"])
        finally:
            running.stop(0)
    finally:
        upstream.stop(0)
    assert yaml.safe_load(path.read_text())["gateway"]["upstream"] == f"{RELEASE}-ranker:50051"
