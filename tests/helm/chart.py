"""The chart's render helpers and the facts the chart tests share: value sets, names, the
rendered manifests and where to find things in them."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from helm_python import Chart

from services.config import ServerCfg
from teran_dev.launcher import merged

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "teran"
DEPLOY = ROOT / "deploy"
RULES_FILE = DEPLOY / "prometheus" / "rules.yaml"
DASHBOARD_FILE = CHART / "dashboards" / "teran.json"
RELEASE = "teran"
NAMESPACE = "search"
KUBE_VERSIONS = ("1.28.0", "1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0")

OPEN: dict[str, Any] = {"security": {"allowInsecure": True}}
"""The chart's defaults require API keys and TLS (validate.yaml refuses to render without them):
"defaults" and the variations of the defaults the tests render are the defaults opted out."""
VALUE_SETS: dict[str, dict[str, Any]] = {"defaults": OPEN} | {
    path.name.removesuffix("-values.yaml"): yaml.safe_load(path.read_text()) or {}
    for path in sorted((CHART / "ci").glob("*-values.yaml"))
}
MICROSERVICE_SETS = [
    name for name, values in VALUE_SETS.items() if values.get("mode") != "monolith"
]
UPGRADE_SETS = [
    name for name, values in VALUE_SETS.items() if values.get("upgrade", {}).get("enabled")
]

# component (resource name suffix) -> (values key, --target)
SERVICES = {
    "ranker": ("ranker", "ranker"),
    "image-encoder": ("imageEncoder", "image_encoder"),
    "text-encoder": ("textEncoder", "text_encoder"),
}
COMPONENT_LABEL = "app.kubernetes.io/component"
MONITORING_CRDS = {"ServiceMonitor", "PrometheusRule"}
"""Prometheus Operator kinds: no bundled schema; checked by structure and promtool instead."""
CERT_MANAGER_CRDS = {"Certificate"}
"""cert-manager's kind: no bundled schema; checked by structure (tests/helm/test_security.py)."""
API_KEY_ENV = "TERAN_COMMON__STORE__API_KEY"
RELEASE_PEER = {
    "podSelector": {
        "matchLabels": {"app.kubernetes.io/name": "teran", "app.kubernetes.io/instance": RELEASE}
    }
}
QDRANT_LABELS = {
    "app.kubernetes.io/name": "teran",
    "app.kubernetes.io/instance": RELEASE,
    COMPONENT_LABEL: "qdrant",
}
# values qdrant.collections.* -> the services' config common.store.*
COLLECTION_KEYS = {
    "shardNumber": "shard_number",
    "replicationFactor": "replication_factor",
    "writeConsistencyFactor": "write_consistency_factor",
}

# Triton's metric names (server docs, "Metrics"): what the dashboard and alerts may use.
TRITON_METRICS = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_pending_request_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_gpu_utilization",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage",
    "nv_cpu_utilization",
    "nv_cpu_memory_used_bytes",
}


# --- rendering ----------------------------------------------------------------------------


@dataclass
class Rendered:
    files: dict[str, str]
    docs: list[dict[str, Any]]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
        return found[0]

    def names(self, kind: str) -> set[str]:
        return {d["metadata"]["name"] for d in self.of(kind)}

    def config(self) -> dict[str, Any]:
        cm = self.one("ConfigMap", RELEASE)
        parsed: dict[str, Any] = yaml.safe_load(cm["data"]["config.yaml"])
        return parsed


def render(
    values: dict[str, Any] | None = None,
    name: str = RELEASE,
    revision: int | None = None,
    base: dict[str, Any] = OPEN,
) -> Rendered:
    """The chart rendered with `values` over `base` (the defaults opted out of security; {}
    renders `values` alone)."""
    values = merged(base, values or {})
    with Chart.load(CHART) as chart:
        files = chart.render(values=values, name=name, namespace=NAMESPACE, revision=revision)
    docs = [
        doc
        for path, text in sorted(files.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    return Rendered(files, docs)


@functools.cache
def rendered(value_set: str) -> Rendered:
    return render(VALUE_SETS[value_set], base={})


def chart_values() -> dict[str, Any]:
    with Chart.load(CHART) as chart:
        return chart.values


def pod_specs(r: Rendered) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in r.docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]
        elif doc["kind"] == "Pod":
            yield doc["metadata"]["name"], doc["spec"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    c: dict[str, Any] = containers[0]
    return c


def port_of(c: dict[str, Any], name: str) -> int:
    return int(next(p["containerPort"] for p in c["ports"] if p["name"] == name))


def secret_files(spec: dict[str, Any], c: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The files a container sees from Secret volumes, path -> (Secret, key); every such mount
    read-only and a whole folder (a subPath mount never sees the Secret's updates)."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    files = {}
    for m in c["volumeMounts"]:
        secret = volumes[m["name"]].get("secret")
        if secret is None:
            continue
        assert m.get("readOnly") is True and "subPath" not in m, (c["name"], m)
        for item in secret["items"]:
            files[f"{m['mountPath']}/{item['path']}"] = (secret["secretName"], item["key"])
    return files


def security_values(value_set: str) -> dict[str, Any]:
    return merged(chart_values()["security"], VALUE_SETS[value_set].get("security", {}))


def tls_secret(security: dict[str, Any]) -> str:
    """The Secret the services' certificate is in: the existing one, or the Certificate's."""
    tls = security["tls"]
    return tls["existingSecret"] or (f"{RELEASE}-tls" if tls["certManager"]["enabled"] else "")


def expected_secret_files(
    value_set: str, target: str, server: ServerCfg
) -> dict[str, tuple[str, str]]:
    """What the config of `target` reads from Secrets, path -> (Secret, key), checking on the
    way that each setting is there exactly when the values turn it on."""
    security = security_values(value_set)
    auth, tls = server.auth, server.tls
    assert auth.allow_insecure is security["allowInsecure"]
    assert auth.reflection == security["reflection"]
    files: dict[Path | None, tuple[str, str]] = {}

    def expect(path: Path | None, ref: dict[str, str] | None) -> None:
        assert (path is not None) == bool(ref and ref["existingSecret"]), (target, path)
        if ref and path is not None:
            files[path] = (ref["existingSecret"], ref["existingSecretKey"])

    expect(auth.keys_file, security["apiKeys"])
    expect(auth.service_key_file, security["serviceKey"] if target == "ranker" else None)
    secret = tls_secret(security)
    mutual = security["tls"]["mutual"] and target in ("image_encoder", "text_encoder")
    assert (server.health_port is not None) == bool(secret), target
    if not secret:
        assert tls == type(tls)(), target
        return {str(p): ref for p, ref in files.items()}
    assert server.health_port == VALUE_SETS[value_set].get("ports", {}).get("health", 50052)
    files[tls.cert_file] = (secret, "tls.crt")
    files[tls.key_file] = (secret, "tls.key")
    assert (tls.peer_ca_file is not None) == (target != "all"), target  # the ranker's peers
    assert (tls.client_ca_file is not None) == mutual, target
    for ca in (tls.peer_ca_file, tls.client_ca_file):
        if ca is not None:
            files[ca] = (secret, "ca.crt")
    return {str(p): ref for p, ref in files.items()}


def standby_entry(triton: bool) -> dict[str, str]:
    """common.standby_models[0] for the default folders: the Triton repository only with Triton."""
    entry = {"checkpoint": "/standby/checkpoint"}
    if triton:
        entry["repository"] = "/standby/repository"
    return entry


def admits(policy: dict[str, Any], labels: dict[str, str], port: str) -> bool:
    """Whether a NetworkPolicy admits a pod of its own namespace carrying `labels` to the named
    port: a rule without `from` admits everyone, a podSelector peer its matching pods (only
    matchLabels; namespace and IP peers are other namespaces' pods)."""
    for rule in policy["spec"].get("ingress", []):
        ports = [p["port"] for p in rule.get("ports", [])]
        if ports and port not in ports:
            continue
        if not rule.get("from"):
            return True
        for peer in rule["from"]:
            if set(peer) != {"podSelector"}:
                continue
            wanted = peer["podSelector"].get("matchLabels", {})
            if all(labels.get(k) == v for k, v in wanted.items()):
                return True
    return False


def job_command(job: dict[str, Any]) -> list[str]:
    c = container(job)
    return [*c["command"], *c["args"]]
