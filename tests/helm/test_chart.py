"""The chart itself: metadata, strict lint, the values schema and the Kubernetes schemas of
every rendered manifest (helm-python-sdk renders, kubernetes-validate --strict checks)."""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterator
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
from helm_python import Chart, HelmError, lint

from services.config import StoreCfg
from tests.helm.chart import (
    CERT_MANAGER_CRDS,
    CHART,
    COLLECTION_KEYS,
    KUBE_VERSIONS,
    MONITORING_CRDS,
    NAMESPACE,
    RELEASE,
    ROOT,
    SERVICES,
    UPGRADE_SETS,
    VALUE_SETS,
    render,
    rendered,
)


def test_value_sets_are_the_documented_ones() -> None:
    assert set(VALUE_SETS) == {
        "defaults",
        "default",
        "cpu",
        "external-qdrant",
        "monolith",
        "autoscaling-off",
        "monitoring-on",
        "upgrade",
        "monolith-upgrade",
        "qdrant-cluster",
        "secure",
    }
    assert UPGRADE_SETS == ["monolith-upgrade", "secure", "upgrade"]


# --- chart metadata, lint, schema ---------------------------------------------------------


def test_chart_metadata_and_values_schema() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    with Chart.load(CHART) as chart:
        meta, schema, defaults = chart.metadata, chart.schema, chart.values
    assert meta["appVersion"] == project["version"]
    assert meta["apiVersion"] == "v2" and not meta.get("dependencies")
    assert (CHART / "values.yaml").read_text().splitlines()[0] == (
        "# yaml-language-server: $schema=values.schema.json"
    )
    assert schema is not None
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["additionalProperties"] is False and "mode" in schema["required"]
    assert schema["properties"]["mode"]["enum"] == ["microservices", "monolith"]
    image = schema["definitions"]["image"]
    assert image["properties"]["pullPolicy"]["enum"] == ["Always", "IfNotPresent", "Never"]
    assert image["additionalProperties"] is False
    for key, _ in SERVICES.values():
        assert schema["properties"][key] == {"$ref": "#/definitions/component"}
        assert set(schema["definitions"]["component"]["required"]) <= set(defaults[key])
    assert defaults["mode"] == "microservices" and defaults["image"]["tag"] == ""


@pytest.mark.parametrize("kube_version", [KUBE_VERSIONS[0], KUBE_VERSIONS[-1]])
@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_lint_strict(value_set: str, kube_version: str) -> None:
    report = lint(
        CHART, VALUE_SETS[value_set] or None, strict=True, kube_version=f"v{kube_version}"
    )
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # severity 1 is INFO ("icon is recommended"); 2 WARNING and 3 ERROR fail a strict lint
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"mode": "both"}, "/mode"),
        ({"replicas": 3}, "additional properties 'replicas'"),
        ({"ranker": {"replicas": 3}}, "additional properties 'replicas'"),
        ({"config": {"ranker": {"candidates": 0}}}, "/config/ranker/candidates"),
        ({"qdrant": {"external": {"url": "qdrant:6333"}}}, "/qdrant/external/url"),
        ({"standbyModel": {"source": "s3"}}, "/standbyModel/source"),
        ({"standbyModel": {"enabled": "yes"}}, "/standbyModel/enabled"),
        ({"upgrade": {"graceSeconds": -1}}, "/upgrade/graceSeconds"),
        ({"upgrade": {"graceSeconds": 3601}}, "/upgrade/graceSeconds"),
        ({"upgrade": {"rolloutTimeoutSeconds": 0}}, "/upgrade/rolloutTimeoutSeconds"),
        ({"upgrade": {"toVersion": "v2; rm -rf /"}}, "/upgrade/toVersion"),
        ({"upgrade": {"toVersion": "--grace-s=0"}}, "/upgrade/toVersion"),
        ({"upgrade": {"toVersion": "a" * 65}}, "/upgrade/toVersion"),
        ({"upgrade": {"image": "teran:0.2.0"}}, "additional properties 'image'"),
        ({"qdrant": {"replicaCount": 0}}, "/qdrant/replicaCount"),
        ({"qdrant": {"replicas": 3}}, "additional properties 'replicas'"),
        ({"qdrant": {"cluster": {"enabled": "yes"}}}, "/qdrant/cluster/enabled"),
        ({"qdrant": {"cluster": {"clusterDomain": "Cluster.Local."}}}, "/qdrant/cluster"),
        ({"qdrant": {"collections": {"shardNumber": 0}}}, "/qdrant/collections/shardNumber"),
        ({"qdrant": {"collections": {"shardNumber": 1025}}}, "/qdrant/collections/shardNumber"),
        ({"qdrant": {"collections": {"replicationFactor": 1.5}}}, "/qdrant/collections"),
        ({"qdrant": {"collections": {"shard_number": 2}}}, "additional properties"),
        ({"qdrant": {"podDisruptionBudget": {"minAvailable": 2}}}, "additional properties"),
    ],
)
def test_schema_rejects(values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError, match="schema") as caught:
        render(values)
    assert message in str(caught.value)


def test_schema_takes_the_model_versions_the_store_takes() -> None:
    """upgrade.toVersion (or empty) is what services.store names collections after."""
    from services.store import collection_names

    with Chart.load(CHART) as chart:
        assert chart.schema is not None
        schema = chart.schema["properties"]["upgrade"]["properties"]["toVersion"]
    samples = ["3f9a1c2b7d4e", "v2", "v2.1-rc_1", "a" * 64, "a" * 65, "-v2", "_v2", "v 2", "v2;x"]
    for version in samples:
        try:
            collection_names(version)
        except ValueError:
            store_takes = False
        else:
            store_takes = True
        schema_takes = jsonschema.Draft7Validator(schema).is_valid(version)
        assert schema_takes == store_takes, version
    assert jsonschema.Draft7Validator(schema).is_valid("")


def test_schema_takes_the_collection_settings_the_services_take() -> None:
    """qdrant.collections.* has the bounds of services.config's common.store.*."""
    with Chart.load(CHART) as chart:
        assert chart.schema is not None
        schema = chart.schema["properties"]["qdrant"]["properties"]["collections"]
    assert set(schema["properties"]) == set(COLLECTION_KEYS) == set(schema["required"])
    for value, key in COLLECTION_KEYS.items():
        bounds = schema["properties"][value]
        assert bounds["type"] == "integer" and bounds["minimum"] == 1, value
        field = StoreCfg.model_fields.get(key)
        if field is None:  # services/config.py gains the settings in parallel
            continue
        assert field.default == 1, key
        limits = {type(m).__name__: m for m in field.metadata}
        assert limits["Ge"].ge == bounds["minimum"], key
        assert limits["Le"].le == bounds["maximum"], key


# --- Kubernetes schemas -------------------------------------------------------------------


@pytest.fixture(scope="module")
def kube_schemas() -> Iterator[None]:
    """kubernetes-validate re-reads its JSON schemas on every call: read each once."""
    with pytest.MonkeyPatch.context() as mp:
        cached = functools.cache(kubernetes_validate.utils.schema_contents)
        mp.setattr(kubernetes_validate.utils, "schema_contents", cached)
        yield


@pytest.mark.usefixtures("kube_schemas")
@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_manifests_validate_strictly(value_set: str) -> None:
    r = rendered(value_set)
    assert r.docs
    no_schema: set[str] = set()
    for doc in r.docs:
        assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                no_schema.add(doc["kind"])
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on {version}: {e.message}")
    assert no_schema <= MONITORING_CRDS | CERT_MANAGER_CRDS
    for doc in r.docs:
        if doc["kind"] in MONITORING_CRDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        if doc["kind"] in CERT_MANAGER_CRDS:
            assert doc["apiVersion"] == "cert-manager.io/v1"
