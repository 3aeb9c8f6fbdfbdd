"""The chart's security (helm/teran values `security`, docs/security-chart.md), checked without a
cluster: the refusals of validate.yaml, Secret mounts and config paths, probes on the health port,
the cert-manager Certificate's names, the upgrade Job's and the helm test Pod's keys and CA, no key
or certificate material in a manifest; then the rendered configs run: a real server started from
the monolith's config with its keys and certificate, the helm test Pod's script and the upgrade
Job's flags against it, and the ranker's peer channel through the image encoder's mTLS."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helm_python import HelmError
from typer.testing import CliRunner

from services.config import load_settings
from services.main import RunningApp, start
from services.security.keys import Role, hash_key, new_key
from services.security.peers import peer_security
from services.server import GrpcServer
from services.upgrade.__main__ import app as upgrade_cli
from teran_client.channels import ChannelSecurity, open_channel
from tests.helm.chart import (
    NAMESPACE,
    RELEASE,
    SERVICES,
    VALUE_SETS,
    container,
    job_command,
    pod_specs,
    render,
    rendered,
    secret_files,
    security_values,
    tls_secret,
)
from tests.services.test_security import _certificate

SECRETS_DIR = "/var/run/secrets/teran"
"""Where the chart mounts the security Secrets (templates/_helpers.tpl teran.security.dir)."""
TLS_SETS = [name for name in VALUE_SETS if tls_secret(security_values(name))]
SERVICE_COMPONENTS = {*SERVICES, "monolith"}
KEY_ENV = "TERAN_API_KEY"
SECURE = {
    "apiKeys": {"existingSecret": "keys"},
    "serviceKey": {"existingSecret": "service-key"},
    "tls": {"existingSecret": "tls"},
}


def test_tls_sets() -> None:
    assert TLS_SETS == ["default", "monolith-upgrade", "monolith", "secure"]
    assert security_values("secure")["tls"]["mutual"] is True


# --- what validate.yaml refuses -----------------------------------------------------------


def test_the_chart_defaults_are_secure() -> None:
    """No values: the services would refuse to start on 0.0.0.0, so the chart refuses first."""
    with pytest.raises(HelmError) as caught:
        render({}, base={})
    message = str(caught.value)
    assert "validate.yaml" in message and "refuse to start without API keys and TLS" in message
    assert "API keys (security.apiKeys.existingSecret" in message
    assert "TLS (security.tls.existingSecret" in message
    assert "security.allowInsecure=true" in message
    only_tls = {"apiKeys": SECURE["apiKeys"], "serviceKey": SECURE["serviceKey"]}
    with pytest.raises(HelmError, match=r"missing: TLS \(") as caught:
        render({"security": only_tls}, base={})
    assert "API keys (" not in str(caught.value)
    assert render({"security": SECURE}, base={}).of("Deployment")
    insecure = render({"security": {"allowInsecure": True}}, base={}).config()["server"]["auth"]
    assert insecure == {"allow_insecure": True, "reflection": "admin"}


@pytest.mark.parametrize(
    ("security", "extra", "message"),
    [
        (
            {"tls": {"existingSecret": "tls", "certManager": {"enabled": True}}},
            {},
            "security.tls.existingSecret and security.tls.certManager.enabled are exclusive",
        ),
        (
            {"tls": {"certManager": {"enabled": True}}},
            {},
            "security.tls.certManager.enabled needs security.tls.certManager.issuerRef.name",
        ),
        ({"tls": {"mutual": True}}, {}, "security.tls.mutual needs TLS"),
        (
            {"tls": {"existingSecret": "tls", "mutual": True}},
            {"mode": "monolith"},
            "security.tls.mutual is mTLS between the services (mode=microservices)",
        ),
        (
            {"apiKeys": {"existingSecret": "keys"}},
            {},
            "security.apiKeys in mode=microservices needs security.serviceKey.existingSecret",
        ),
        (
            {"apiKeys": {"existingSecret": "keys"}},
            {"mode": "monolith", "upgrade": {"enabled": True, "toVersion": "v2"}},
            "upgrade.enabled with security.apiKeys needs security.adminKey.existingSecret",
        ),
    ],
)
def test_validate_refuses_security_mixes(
    security: dict[str, Any], extra: dict[str, Any], message: str
) -> None:
    # allowInsecure (the tests' base) does not excuse a mix that cannot work
    with pytest.raises(HelmError) as caught:
        render({**extra, "security": security})
    assert "validate.yaml" in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"security": {"reflection": "on"}}, "/security/reflection"),
        ({"security": {"reflection": False}}, "/security/reflection"),
        ({"security": {"apiKeys": {"existingSecret": "Bad_Name"}}}, "/security/apiKeys"),
        ({"security": {"apiKeys": {"existingSecretKey": "a/b"}}}, "/security/apiKeys"),
        ({"security": {"apiKeys": {"value": "teran_x"}}}, "additional properties 'value'"),
        ({"security": {"tls": {"certManager": {"duration": "90d"}}}}, "/security/tls"),
        ({"security": {"tls": {"enabled": True}}}, "additional properties 'enabled'"),
        ({"security": {"tls": {"certManager": {"extraDnsNames": ["A_B"]}}}}, "/security/tls"),
        ({"ports": {"health": 0}}, "/ports/health"),
        ({"config": {"server": {"auth": {"allow_insecure": True}}}}, "additional properties"),
        ({"config": {"server": {"limits": {"max_open_streams": 0}}}}, "/config/server/limits"),
        ({"networkPolicy": {"healthFrom": {}}}, "/networkPolicy/healthFrom"),
    ],
)
def test_schema_rejects_security_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError, match="schema") as caught:
        render(values)
    assert message in str(caught.value)


# --- the rendered manifests ---------------------------------------------------------------


def service_deployments(value_set: str) -> list[dict[str, Any]]:
    return [
        d
        for d in rendered(value_set).of("Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] in SERVICE_COMPONENTS
    ]


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_probes_use_the_health_port_with_tls(value_set: str) -> None:
    r = rendered(value_set)
    tls = value_set in TLS_SETS
    deployments = service_deployments(value_set)
    assert deployments
    for dep in deployments:
        c = container(dep)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        probe_port = ports["health"] if tls else ports["grpc"]
        assert ("health" in ports) == tls
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == probe_port, (dep["metadata"]["name"], probe)
        assert c["livenessProbe"]["grpc"]["service"] == "liveness"
        if tls:
            assert r.config()["server"]["health_port"] == ports["health"] != ports["grpc"]
        svc = r.one("Service", dep["metadata"]["name"])
        # the plaintext health port is for the kubelet alone: on no Service
        assert {p["name"] for p in svc["spec"]["ports"]} == {"grpc", "metrics"}
        grpc_port = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
        assert ("appProtocol" in grpc_port) == (not tls)


def test_secure_set_mounts_the_secrets_read_only() -> None:
    """The secure set: every service mounts the keys file and the certificate, the ranker alone
    the service key; the config names each mounted file (the config test of
    tests/helm/test_topology.py checks the files against the settings, target by target)."""
    r = rendered("secure")
    security = security_values("secure")
    for component in SERVICES:
        dep = r.one("Deployment", f"{RELEASE}-{component}")
        spec = dep["spec"]["template"]["spec"]
        files = secret_files(spec, container(dep))
        expected = {
            f"{SECRETS_DIR}/keys/keys.yaml": ("teran-api-keys", "keys.yaml"),
            f"{SECRETS_DIR}/tls/tls.crt": (f"{RELEASE}-tls", "tls.crt"),
            f"{SECRETS_DIR}/tls/tls.key": (f"{RELEASE}-tls", "tls.key"),
            f"{SECRETS_DIR}/tls/ca.crt": (f"{RELEASE}-tls", "ca.crt"),
        }
        if component == "ranker":
            expected[f"{SECRETS_DIR}/service-key/ranker"] = ("teran-service-key", "ranker")
        assert files == expected, component
        for volume in spec["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["defaultMode"] == 0o440, (component, volume["name"])
    config = r.config()["server"]
    assert config["auth"] == {
        "allow_insecure": False,
        "keys_file": f"{SECRETS_DIR}/keys/keys.yaml",
        "reflection": "off",
    }
    assert config["tls"] == {
        "cert_file": f"{SECRETS_DIR}/tls/tls.crt",
        "key_file": f"{SECRETS_DIR}/tls/tls.key",
        "peer_ca_file": f"{SECRETS_DIR}/tls/ca.crt",
    }
    assert config["limits"] == VALUE_SETS["secure"]["config"]["server"]["limits"]
    assert security["tls"]["mutual"]
    env = {
        component: {
            e["name"]: e.get("value")
            for e in container(r.one("Deployment", f"{RELEASE}-{component}"))["env"]
        }
        for component in SERVICES
    }
    client_ca = "TERAN_SERVER__TLS__CLIENT_CA_FILE"
    service_key = "TERAN_SERVER__AUTH__SERVICE_KEY_FILE"
    assert env["ranker"][service_key] == f"{SECRETS_DIR}/service-key/ranker"
    assert client_ca not in env["ranker"]
    for component in ("image-encoder", "text-encoder"):
        assert env[component][client_ca] == f"{SECRETS_DIR}/tls/ca.crt"
        assert service_key not in env[component]


def test_certificate_names_every_service() -> None:
    for value_set in ("secure", "monolith-upgrade"):
        r = rendered(value_set)
        manager = security_values(value_set)["tls"]["certManager"]
        (cert,) = r.of("Certificate")
        spec = cert["spec"]
        assert cert["apiVersion"] == "cert-manager.io/v1"
        assert cert["metadata"]["name"] == spec["secretName"] == f"{RELEASE}-tls"
        assert spec["issuerRef"] == manager["issuerRef"]
        assert (spec["duration"], spec["renewBefore"]) == (
            manager["duration"],
            manager["renewBefore"],
        )
        # the ranker and the upgrade Job present it as a client certificate (mTLS)
        assert {"server auth", "client auth"} <= set(spec["usages"])
        assert spec["privateKey"]["rotationPolicy"] == "Always"
        services = {
            s["metadata"]["name"]
            for s in r.of("Service")
            if s["metadata"]["labels"]["app.kubernetes.io/component"] in SERVICE_COMPONENTS
        }
        assert services
        names = [
            form.format(svc=svc, ns=NAMESPACE)
            for svc in sorted(services)
            for form in ("{svc}", "{svc}.{ns}", "{svc}.{ns}.svc", "{svc}.{ns}.svc.cluster.local")
        ]
        assert sorted(spec["dnsNames"]) == sorted(names + manager["extraDnsNames"])
        # every pod that mounts a certificate mounts this one
        for name, pod in pod_specs(r):
            for volume in pod["volumes"]:
                if volume["name"] == "tls":
                    assert volume["secret"]["secretName"] == spec["secretName"], name
    assert not rendered("default").of("Certificate")  # an existing Secret: no Certificate
    manager = {"enabled": True, "issuerRef": {"name": "ca"}, "clusterDomain": "corp.internal"}
    other = render({"security": {"tls": {"certManager": manager}}}).one(
        "Certificate", f"{RELEASE}-tls"
    )
    assert f"{RELEASE}-ranker.{NAMESPACE}.svc.corp.internal" in other["spec"]["dnsNames"]
    assert not [n for n in other["spec"]["dnsNames"] if n.endswith("cluster.local")]


def test_upgrade_job_gets_the_admin_key_from_a_secret() -> None:
    for value_set, mutual in (("secure", True), ("monolith-upgrade", False)):
        r = rendered(value_set)
        (job,) = r.of("Job")
        c = container(job)
        env = {e["name"]: e for e in c["env"]}
        admin = security_values(value_set)["adminKey"]
        assert env[KEY_ENV] == {
            "name": KEY_ENV,
            "valueFrom": {
                "secretKeyRef": {
                    "name": admin["existingSecret"],
                    "key": admin["existingSecretKey"],
                }
            },
        }
        command = job_command(job)
        options = command[3 : command.index("run")]
        tls = f"{SECRETS_DIR}/tls"
        expected = ["--ca-file", f"{tls}/ca.crt"]
        if mutual:
            expected += ["--cert-file", f"{tls}/tls.crt", "--key-file", f"{tls}/tls.key"]
        assert options == expected, value_set
        files = secret_files(job["spec"]["template"]["spec"], c)
        assert set(files) == set(options[1::2])
        assert {secret for secret, _ in files.values()} == {f"{RELEASE}-tls"}
    # no keys: no key, no TLS: no flags
    (job,) = rendered("upgrade").of("Job")
    assert KEY_ENV not in {e["name"] for e in container(job)["env"]}
    assert job_command(job)[3] == "run"


def test_helm_test_pod_uses_the_ca_and_the_ranker_key() -> None:
    r = rendered("secure")
    (pod,) = r.of("Pod")
    c = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert env["TERAN_CA_FILE"]["value"] == f"{SECRETS_DIR}/tls/ca.crt"
    assert env["TERAN_KEYS_REQUIRED"]["value"] == "true"
    assert env[KEY_ENV]["valueFrom"]["secretKeyRef"] == {
        "name": "teran-service-key",
        "key": "ranker",
    }
    # the ranker asks for no client certificate: the Pod gets the CA alone
    assert secret_files(pod["spec"], c) == {
        f"{SECRETS_DIR}/tls/ca.crt": (f"{RELEASE}-tls", "ca.crt")
    }
    (plain,) = rendered("defaults").of("Pod")
    names = {e["name"] for e in plain["spec"]["containers"][0]["env"]}
    assert names == {"TERAN_RANKER"}


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_no_key_or_certificate_material_in_the_manifests(value_set: str) -> None:
    """Keys and certificates live only in the Secrets the user made (or cert-manager issues):
    no ConfigMap holds one, no env var carries one as a literal, and the chart writes no Secret
    but the Qdrant key's."""
    r = rendered(value_set)
    material = re.compile(r"-----BEGIN|PRIVATE KEY|teran_[A-Za-z0-9_-]{20}|\b[0-9a-f]{64}\b")
    for cm in r.of("ConfigMap"):
        for key, text in cm.get("data", {}).items():
            if key.endswith(".json"):  # the Grafana dashboard
                continue
            assert not material.search(text), (cm["metadata"]["name"], key)
    for name, pod in pod_specs(r):
        for c in pod["containers"]:
            for var in c.get("env", []):
                if var["name"] == KEY_ENV or var["name"].endswith("API_KEY"):
                    assert "value" not in var, (name, var["name"])
    assert {s["metadata"]["name"] for s in r.of("Secret")} <= {f"{RELEASE}-qdrant-api-key"}


def test_network_policy_leaves_the_health_port_to_the_kubelet() -> None:
    """No rule for the health port unless networkPolicy.healthFrom asks: the kubelet's probes
    come from the node, which most CNIs admit whatever the policy says."""
    for value_set in TLS_SETS:
        peers = VALUE_SETS[value_set].get("networkPolicy", {}).get("healthFrom", [])
        for policy in rendered(value_set).of("NetworkPolicy"):
            component = policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            health = [
                rule
                for rule in policy["spec"].get("ingress", [])
                if [p["port"] for p in rule["ports"]] == ["health"]
            ]
            if peers and component in SERVICE_COMPONENTS:
                assert health == [{"from": peers, "ports": [{"port": "health", "protocol": "TCP"}]}]
            else:
                assert health == [], (value_set, component)
    # without TLS there is no health port, so healthFrom opens nothing
    plain = render({"networkPolicy": {"healthFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}})
    assert "health" not in json.dumps([p["spec"] for p in plain.of("NetworkPolicy")])


# --- the rendered configs, run --------------------------------------------------------------


def _pem_files(folder: Path, **certs: Any) -> dict[str, Path]:
    """Write (certificate, key) pairs as <name>.crt / <name>.key; a bare certificate alone."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, value in certs.items():
        cert, key = value if isinstance(value, tuple) else (value, None)
        out[f"{name}.crt"] = folder / f"{name}.crt"
        out[f"{name}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            out[f"{name}.key"] = folder / f"{name}.key"
            out[f"{name}.key"].write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
    return out


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The Secrets as the pods see them, under a temporary folder standing for SECRETS_DIR: the
    keys file (an admin, a search and the ranker's key), the release's certificate (names
    localhost and 127.0.0.1) and its CA, and a client certificate of another CA."""
    root = tmp_path_factory.mktemp("secrets")
    ca = _certificate("teran test CA", None, ca=True)
    server = _certificate(f"{RELEASE}-services", ca)
    stranger_ca = _certificate("another CA", None, ca=True)
    tls = _pem_files(root / "tls", tls=server, ca=ca[0])
    stranger = _pem_files(root / "stranger", client=_certificate("client", stranger_ca))
    keys = {"admin": new_key(), "search": new_key(), "ranker": new_key()}
    roles = {"admin": [Role.ADMIN], "search": [Role.SEARCH], "ranker": [Role.SEARCH]}
    entries = [
        {"name": name, "sha256": hash_key(key), "roles": [r.value for r in roles[name]]}
        for name, key in keys.items()
    ]
    doc = yaml.safe_dump({"keys": entries})
    for key_name in ("keys.yaml", "keys"):  # the sets' existingSecretKey values
        (root / "keys").mkdir(exist_ok=True)
        (root / "keys" / key_name).write_text(doc)
    (root / "service-key").mkdir()
    (root / "service-key" / "ranker").write_text(keys["ranker"] + "\n")  # as new-key prints
    return {"root": root, "tls": tls, "stranger": stranger, "keys": keys}


def _local(text: str, secrets: dict[str, Any]) -> str:
    return text.replace(SECRETS_DIR, str(secrets["root"]))


def _config_file(value_set: str, secrets: dict[str, Any], path: Path) -> Path:
    config = rendered(value_set).one("ConfigMap", RELEASE)["data"]["config.yaml"]
    path.write_text(_local(config, secrets))
    return path


@pytest.fixture(scope="module")
def keyed_monolith(
    checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, secrets_dir: dict[str, Any]
) -> Iterator[RunningApp]:
    """The monolith-upgrade set's config, as rendered (0.0.0.0, keys, TLS, health port), with
    the test's model, store and free ports."""
    folder = tmp_path_factory.mktemp("monolith")
    saved = {v: os.environ.pop(v) for v in list(os.environ) if v.startswith("TERAN_")}
    try:
        settings = load_settings(
            _config_file("monolith-upgrade", secrets_dir, folder / "config.yaml"),
            target="all",
            common={
                "model": {"checkpoint": str(checkpoint)},
                "standby_models": [],
                "store": {"path": str(folder / "store")},
            },
            server={"grpc_port": 0, "metrics_port": None, "health_port": 0, "shutdown_grace_s": 0},
        )
    finally:
        os.environ.update(saved)
    assert settings.server.host == "0.0.0.0" and not settings.server.auth.allow_insecure
    running = start(settings)
    yield running
    running.stop(0)


def _local_address(running: RunningApp, health: bool = False) -> str:
    server = running.app.server
    return f"127.0.0.1:{server.health_port if health else server.port}"


def test_the_health_port_answers_probes_in_plaintext(keyed_monolith: RunningApp) -> None:
    request = health_pb2.HealthCheckRequest(service="liveness")
    with grpc.insecure_channel(_local_address(keyed_monolith, health=True)) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # the gRPC port itself speaks TLS only
    with (
        grpc.insecure_channel(_local_address(keyed_monolith)) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def _pod_env(value_set: str, secrets: dict[str, Any], address: str) -> dict[str, str]:
    """The helm test Pod's plain env with the Secrets' paths made local and its target here."""
    (pod,) = rendered(value_set).of("Pod")
    env = {
        e["name"]: _local(e["value"], secrets)
        for e in pod["spec"]["containers"][0]["env"]
        if "value" in e
    }
    assert f"{RELEASE}-monolith" in env.pop("TERAN_RANKER")
    return {**env, "TERAN_RANKER": address}


def test_the_helm_test_pod_passes_against_the_keyed_server(
    keyed_monolith: RunningApp, secrets_dir: dict[str, Any]
) -> None:
    (pod,) = rendered("monolith-upgrade").of("Pod")
    script = pod["spec"]["containers"][0]["command"][-1]
    env = _pod_env("monolith-upgrade", secrets_dir, _local_address(keyed_monolith))
    assert set(env) == {"TERAN_RANKER", "TERAN_CA_FILE", "TERAN_KEYS_REQUIRED"}
    base = {k: v for k, v in os.environ.items() if not k.startswith("TERAN_")}

    def run(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script],
            env={**base, **env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = run()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "SERVING TLS" in ok.stdout and "Stats without a key: UNAUTHENTICATED" in ok.stdout
    keyed = run(**{KEY_ENV: secrets_dir["keys"]["search"] + "\n"})
    assert keyed.returncode == 0 and "Stats with the ranker's key: OK" in keyed.stdout
    # a wrong CA fails the test
    wrong = run(TERAN_CA_FILE=str(secrets_dir["stranger"]["client.crt"]))
    assert wrong.returncode != 0


def test_upgrade_cli_lists_the_security_options() -> None:
    result = CliRunner().invoke(upgrade_cli, ["--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option in ("--api-key", "--tls", "--ca-file", "--cert-file", "--key-file"):
        assert option in result.output, option
    assert "TERAN_API_KEY" in result.output


def test_upgrade_cli_with_the_jobs_flags_against_the_keyed_server(
    keyed_monolith: RunningApp, secrets_dir: dict[str, Any]
) -> None:
    """The Job's flags (everything before its command) reach the Admin service over TLS; the
    key decides: none is UNAUTHENTICATED, a search key PERMISSION_DENIED, the admin key goes."""
    (job,) = rendered("monolith-upgrade").of("Job")
    command = job_command(job)
    flags = [_local(a, secrets_dir) for a in command[3 : command.index("run")]]
    status = [*flags, "status", "--address", _local_address(keyed_monolith)]
    cli = CliRunner()
    cases = [(None, 1, "UNAUTHENTICATED"), ("search", 1, "PERMISSION_DENIED"), ("admin", 0, "live")]
    for key, code, words in cases:
        env = {KEY_ENV: secrets_dir["keys"][key] + "\n"} if key else {KEY_ENV: ""}
        result = cli.invoke(upgrade_cli, status, env=env)
        assert (result.exit_code, words in result.output) == (code, True), (
            key,
            result.output,
            repr(result.exception),
        )
    # the flag form, and a server name other than the address's host
    admin = secrets_dir["keys"]["admin"]
    named = ["--api-key", admin, "--server-name", "localhost", *status]
    result = cli.invoke(upgrade_cli, named, env={KEY_ENV: ""})
    assert result.exit_code == 0, result.output
    half = cli.invoke(upgrade_cli, ["--cert-file", flags[1], *status], env={KEY_ENV: admin})
    assert half.exit_code == 2 and "--key-file" in half.output


def test_the_ranker_reaches_the_encoder_through_mtls(
    secrets_dir: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The secure set's configs, each with its Deployment's env: the image encoder's server
    requires a client certificate, and the ranker's peer channel (its certificate and service
    key) gets through, where a client without a certificate or with another CA's does not."""
    for var in [v for v in os.environ if v.startswith("TERAN_")]:
        monkeypatch.delenv(var)
    r = rendered("secure")
    path = _config_file("secure", secrets_dir, tmp_path / "config.yaml")

    def settings_of(component: str, target: str) -> Any:
        env = container(r.one("Deployment", f"{RELEASE}-{component}"))["env"]
        with monkeypatch.context() as m:
            for var in env:
                if var["name"].startswith("TERAN_SERVER__"):
                    m.setenv(var["name"], _local(var["value"], secrets_dir))
            return load_settings(path, target=target, server={"grpc_port": 0, "health_port": 0})

    encoder = settings_of("image-encoder", "image_encoder")
    ranker = settings_of("ranker", "ranker")
    assert encoder.server.tls.client_ca_file is not None
    server = GrpcServer(encoder.server)
    server.start()
    try:
        address = f"127.0.0.1:{server.port}"
        request = health_pb2.HealthCheckRequest()
        peer = peer_security(ranker.server)
        assert peer.api_key == secrets_dir["keys"]["ranker"]
        assert server.keys is not None and peer.api_key is not None
        entry = server.keys.lookup(peer.api_key)
        assert entry is not None and Role.SEARCH in entry.roles
        with open_channel(address, peer) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        tls = secrets_dir["tls"]
        stranger = secrets_dir["stranger"]
        for refused in (
            ChannelSecurity(ca_file=tls["ca.crt"]),
            ChannelSecurity(
                ca_file=tls["ca.crt"],
                cert_file=stranger["client.crt"],
                key_file=stranger["client.key"],
            ),
        ):
            with (
                open_channel(address, refused) as channel,
                pytest.raises(grpc.RpcError) as caught,
            ):
                health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)
