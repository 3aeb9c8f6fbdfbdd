"""What the deployment relies on: one same-shaped block per service, the services' config
loads in services.config, pod security, NetworkPolicy exposure, Triton, Qdrant (one node, a
cluster or external), the monolith, and the bad mixes validate.yaml refuses."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python import HelmError

from services.config import CommonCfg, StoreCfg, load_settings
from tests.helm.chart import (
    API_KEY_ENV,
    COLLECTION_KEYS,
    COMPONENT_LABEL,
    NAMESPACE,
    QDRANT_LABELS,
    RELEASE,
    RELEASE_PEER,
    SERVICES,
    UPGRADE_SETS,
    VALUE_SETS,
    admits,
    chart_values,
    container,
    expected_secret_files,
    pod_specs,
    port_of,
    render,
    rendered,
    secret_files,
    standby_entry,
)

# --- the services ---------------------------------------------------------------------------


def test_each_service_has_its_own_block() -> None:
    defaults = chart_values()
    fixed = rendered("autoscaling-off")
    fixed_values = VALUE_SETS["autoscaling-off"]
    auto = rendered("defaults")
    resources = []
    for component, (key, target) in SERVICES.items():
        name = f"{RELEASE}-{component}"
        own = defaults[key]
        for r in (auto, fixed):
            dep = r.one("Deployment", name)
            c = container(dep)
            assert c["args"] == ["--config", "/etc/teran/config.yaml", "--target", target]
            assert c["resources"] == own["resources"]
            grpc_port = port_of(c, "grpc")
            for probe in ("startupProbe", "readinessProbe"):
                assert c[probe]["grpc"] == {"port": grpc_port}, (name, probe)
            assert c["livenessProbe"]["grpc"] == {"port": grpc_port, "service": "liveness"}
            assert (
                c["livenessProbe"]["failureThreshold"]
                == own["probes"]["liveness"]["failureThreshold"]
            )
            assert port_of(c, "metrics") == 9464
            selector = dep["spec"]["selector"]["matchLabels"]
            assert selector[COMPONENT_LABEL] == component
            pdb = r.one("PodDisruptionBudget", name)
            assert pdb["spec"]["selector"]["matchLabels"] == selector
            svc = r.one("Service", name)
            assert svc["spec"]["selector"] == selector
            assert {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]} == {
                "grpc": "grpc",
                "metrics": "metrics",
            }
        resources.append(json.dumps(own["resources"], sort_keys=True))
        # autoscaling on: the HPA owns the replica count
        dep = auto.one("Deployment", name)
        assert "replicas" not in dep["spec"]
        hpa = auto.one("HorizontalPodAutoscaler", name)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert hpa["spec"]["minReplicas"] == own["autoscaling"]["minReplicas"]
        assert hpa["spec"]["maxReplicas"] == own["autoscaling"]["maxReplicas"]
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        # autoscaling off: the service's own replica count
        assert (
            fixed.one("Deployment", name)["spec"]["replicas"] == fixed_values[key]["replicaCount"]
        )
        assert name not in fixed.names("HorizontalPodAutoscaler")
    assert len(set(resources)) == len(SERVICES)
    assert fixed.one("PodDisruptionBudget", f"{RELEASE}-ranker")["spec"] == {
        "minAvailable": 2,
        "selector": {
            "matchLabels": {
                "app.kubernetes.io/name": "teran",
                "app.kubernetes.io/instance": RELEASE,
                COMPONENT_LABEL: "ranker",
            }
        },
    }


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_config_loads_in_the_services(
    value_set: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap is a valid services/config.py file for every target the chart runs (with
    the container's own TERAN_* settings), its addresses are the rendered Services, and every
    key and certificate path it names is a file mounted from the right Secret, and no other."""
    for var in [v for v in os.environ if v.startswith("TERAN_")]:
        monkeypatch.delenv(var)
    r = rendered(value_set)
    monolith = VALUE_SETS[value_set].get("mode") == "monolith"
    path = tmp_path / "config.yaml"
    path.write_text(r.one("ConfigMap", RELEASE)["data"]["config.yaml"])
    standby = r.config()["common"].get("standby_models")
    assert (standby is not None) == bool(
        VALUE_SETS[value_set].get("standbyModel", {}).get("enabled")
    )
    if standby is not None and "standby_models" not in CommonCfg.model_fields:
        # services/config.py gains common.standby_models with the model upgrades (landing in
        # parallel); until then Settings forbids the key: check the entry here, load the rest.
        # Once the field exists this branch is dead and Settings loads the entry below.
        triton = r.config()["common"]["inference"]["backend"] == "triton"
        assert standby == [standby_entry(triton)]
        config = r.config()
        del config["common"]["standby_models"]
        path.write_text(yaml.safe_dump(config))
    targets = {}
    for dep in r.of("Deployment"):
        args = container(dep)["args"]
        if "--target" in args:
            targets[dep["metadata"]["name"]] = args[args.index("--target") + 1]
    assert targets
    services = {s["metadata"]["name"]: s for s in r.of("Service")}
    collections = chart_values()["qdrant"]["collections"] | VALUE_SETS[value_set].get(
        "qdrant", {}
    ).get("collections", {})
    cluster_settings = {key: collections[value] for value, key in COLLECTION_KEYS.items()}

    def address_of(host_port: str, port_name: str) -> None:
        host, port = host_port.rsplit(":", 1)
        ports = {p["name"]: p["port"] for p in services[host]["spec"]["ports"]}
        assert ports[port_name] == int(port), host_port

    for name, target in targets.items():
        dep = r.one("Deployment", name)
        c = container(dep)
        with monkeypatch.context() as env:
            for var in c["env"]:
                if var["name"].startswith("TERAN_") and "value" in var:
                    env.setenv(var["name"], var["value"])
            settings = load_settings(path, target=target)
        assert secret_files(dep["spec"]["template"]["spec"], c) == expected_secret_files(
            value_set, target, settings.server
        )
        assert settings.server.host == "0.0.0.0"
        assert settings.server.grpc_port == 50051 and settings.server.metrics_port == 9464
        assert str(settings.common.model.checkpoint) == "/models/checkpoint"
        if standby is not None and "standby_models" in CommonCfg.model_fields:
            dumped = settings.common.model_dump(mode="json", exclude_none=True)
            assert dumped["standby_models"] == standby
        store, inference = settings.common.store, settings.common.inference
        if target == "all":
            assert store.kind == "edge" and str(store.path) == "/data/store"
            assert inference.backend == "inprocess"
            assert settings.ranker.text_encoder_url is None
            continue
        assert store.kind == "qdrant" and store.url and store.api_key is None
        rendered_store = r.config()["common"]["store"]
        assert {k: rendered_store[k] for k in cluster_settings} == cluster_settings
        # services/config.py gains the collection cluster settings in parallel; until then
        # StoreCfg ignores the keys, once it has them they must load as rendered.
        if "shard_number" in StoreCfg.model_fields:
            assert {k: getattr(store, k) for k in cluster_settings} == cluster_settings
        if VALUE_SETS[value_set].get("qdrant", {}).get("external"):
            assert store.url == VALUE_SETS[value_set]["qdrant"]["external"]["url"]
        else:
            address_of(store.url.removeprefix("http://"), "http")
        assert inference.backend == "triton"
        address_of(inference.triton_url, "grpc")
        assert str(settings.common.model.repository) == "/models/repository"
        assert settings.ranker.text_encoder_url and settings.ranker.image_encoder_url
        address_of(settings.ranker.text_encoder_url, "grpc")
        address_of(settings.ranker.image_encoder_url, "grpc")
    assert sorted(targets.values()) == (
        ["all"] if monolith else ["image_encoder", "ranker", "text_encoder"]
    )


def test_config_checksum_rolls_the_pods() -> None:
    before, after = rendered("defaults"), render({"config": {"ranker": {"candidates": 200}}})
    assert "candidates: 200" in after.files["teran/templates/configmap.yaml"]
    for component in SERVICES:
        name = f"{RELEASE}-{component}"
        old, new = (
            r.one("Deployment", name)["spec"]["template"]["metadata"]["annotations"][
                "checksum/config"
            ]
            for r in (before, after)
        )
        assert (
            old
            == hashlib.sha256(before.files["teran/templates/configmap.yaml"].encode()).hexdigest()
        )
        assert old != new


def test_qdrant_api_key_comes_from_a_secret() -> None:
    for value_set, secret in (
        ("defaults", f"{RELEASE}-qdrant-api-key"),
        ("external-qdrant", "qdrant-api-key"),
    ):
        r = rendered(value_set)
        assert "api_key" not in r.one("ConfigMap", RELEASE)["data"]["config.yaml"]
        for component in SERVICES:
            env = {
                e["name"]: e
                for e in container(r.one("Deployment", f"{RELEASE}-{component}"))["env"]
            }
            if component == "text-encoder":  # never touches the store
                assert API_KEY_ENV not in env
                continue
            assert env[API_KEY_ENV]["valueFrom"]["secretKeyRef"] == {
                "name": secret,
                "key": "api-key",
            }
        if value_set == "defaults":
            assert r.one("Secret", secret)["data"]["api-key"]
            qdrant = r.one("StatefulSet", f"{RELEASE}-qdrant")
            env = {e["name"]: e for e in container(qdrant)["env"]}
            assert env["QDRANT__SERVICE__API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == secret
        else:
            assert r.of("Secret") == [] and r.of("StatefulSet") == []


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_pods_run_restricted(value_set: str) -> None:
    r = rendered(value_set)
    specs = list(pod_specs(r))
    assert specs
    for name, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        # a token only for the upgrade Job's own ServiceAccount (upgrade.waitForRollout)
        upgrade_sa = spec["serviceAccountName"] == f"{RELEASE}-upgrade"
        assert spec["automountServiceAccountToken"] is upgrade_sa, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (name, c["name"])
        for c in spec["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], (name, c["name"])
            if spec.get("restartPolicy") != "Never":  # long-running: drain before SIGTERM
                assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep", name


def test_network_policy_exposes_only_the_ranker() -> None:
    for value_set in (
        "defaults",
        "monolith",
        "monitoring-on",
        "external-qdrant",
        "qdrant-cluster",
        *UPGRADE_SETS,
    ):
        r = rendered(value_set)
        extra = VALUE_SETS[value_set].get("networkPolicy", {}).get("metricsFrom", [])
        probes = VALUE_SETS[value_set].get("networkPolicy", {}).get("healthFrom", [])
        policies = {
            p["spec"]["podSelector"]["matchLabels"][COMPONENT_LABEL]: p
            for p in r.of("NetworkPolicy")
        }
        monolith = VALUE_SETS[value_set].get("mode") == "monolith"
        public = "monolith" if monolith else "ranker"
        for component, policy in policies.items():
            assert policy["spec"]["policyTypes"] == ["Ingress"]
            for rule in policy["spec"].get("ingress", []):
                ports = [p["port"] for p in rule["ports"]]
                if not rule.get("from"):
                    assert (component, ports) == (public, ["grpc"]), (value_set, component)
                elif ports == ["p2p"]:  # a Qdrant cluster's nodes among themselves
                    assert component == "qdrant", (value_set, component)
                    assert rule["from"] == [{"podSelector": {"matchLabels": QDRANT_LABELS}}]
                elif ports == ["metrics"]:
                    assert rule["from"] == [RELEASE_PEER, *extra], (value_set, component)
                elif ports == ["health"]:  # only networkPolicy.healthFrom, never the release
                    assert probes and rule["from"] == probes, (value_set, component)
                else:
                    assert rule["from"] == [RELEASE_PEER], (value_set, component, rule)
        # every pod of the release is behind a policy
        for doc in r.of("Deployment") + r.of("StatefulSet") + r.of("Job"):
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert labels[COMPONENT_LABEL] in policies, doc["metadata"]["name"]
        open_rules = [
            c
            for c, p in policies.items()
            for rule in p["spec"].get("ingress", [])
            if not rule.get("from")
        ]
        assert open_rules == [public]
        # the upgrade Job reaches the Admin service (the image encoder's or the monolith's gRPC
        # port) as one of the release's pods, and nothing reaches the Job
        stranger = {  # another release's upgrade Job in the same namespace
            "app.kubernetes.io/name": "teran",
            "app.kubernetes.io/instance": "other",
            COMPONENT_LABEL: "upgrade",
        }
        if value_set in UPGRADE_SETS:
            (job,) = r.of("Job")
            labels = job["spec"]["template"]["metadata"]["labels"]
            admin = policies["monolith" if monolith else "image-encoder"]
            assert admits(admin, labels, "grpc"), value_set
            assert monolith or not admits(admin, stranger, "grpc"), value_set
            assert "ingress" not in policies["upgrade"]["spec"]
            assert not admits(policies["upgrade"], labels, "grpc")
        else:
            assert "upgrade" not in policies
    ingest = render({"networkPolicy": {"ingestFrom": [{"namespaceSelector": {}}]}})
    policy = ingest.one("NetworkPolicy", f"{RELEASE}-image-encoder")
    assert policy["spec"]["ingress"][0]["from"] == [RELEASE_PEER, {"namespaceSelector": {}}]


def test_triton_on_gpu_and_on_cpu() -> None:
    gpu = rendered("defaults").one("Deployment", f"{RELEASE}-triton")
    spec = gpu["spec"]["template"]["spec"]
    c = container(gpu)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert "--model-repository=/models/repository" in c["args"]
    init = spec["initContainers"][0]
    assert init["image"] == "teran-model-repo:0.1.0"
    assert init["volumeMounts"] == [{"name": "models", "mountPath": "/models"}]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in c["volumeMounts"]

    cpu_render = rendered("cpu")
    assert "nvidia.com/gpu" not in json.dumps(cpu_render.docs)
    cpu = cpu_render.one("Deployment", f"{RELEASE}-triton")
    assert "tolerations" not in cpu["spec"]["template"]["spec"]
    assert "--allow-gpu-metrics=false" in container(cpu)["args"]

    pvc = render({"model": {"source": "pvc", "existingClaim": "models"}})
    for _, pod in pod_specs(pvc):
        assert "initContainers" not in pod
    volume = pvc.one("Deployment", f"{RELEASE}-triton")["spec"]["template"]["spec"]["volumes"][0]
    assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}

    inprocess = render({"triton": {"enabled": False}})
    assert f"{RELEASE}-triton" not in inprocess.names("Deployment")
    assert inprocess.config()["common"]["inference"]["backend"] == "inprocess"


def test_qdrant_statefulset_or_external() -> None:
    r = rendered("defaults")
    sts = r.one("StatefulSet", f"{RELEASE}-qdrant")
    assert sts["spec"]["replicas"] == 1
    assert "podManagementPolicy" not in sts["spec"]
    assert sts["spec"]["serviceName"] in r.names("Service")
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "storage"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    c = container(sts)
    assert {"name": "storage", "mountPath": "/qdrant/storage"} in c["volumeMounts"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # a single node: the image's own entrypoint, no p2p port, no cluster, no PDB
    assert "command" not in c and "args" not in c
    assert [p["name"] for p in c["ports"]] == ["http", "grpc"]
    assert not {e["name"] for e in c["env"]} & {
        "QDRANT__CLUSTER__ENABLED",
        "QDRANT__CLUSTER__P2P__PORT",
    }
    assert "affinity" not in sts["spec"]["template"]["spec"]
    headless = r.one("Service", f"{RELEASE}-qdrant-headless")
    assert [p["name"] for p in headless["spec"]["ports"]] == ["http", "grpc"]
    assert f"{RELEASE}-qdrant" not in r.names("PodDisruptionBudget")
    assert r.config()["common"]["store"] == {
        "kind": "qdrant",
        "url": f"http://{RELEASE}-qdrant:6333",
        "shard_number": 1,
        "replication_factor": 1,
        "write_consistency_factor": 1,
    }
    external = rendered("external-qdrant")
    assert f"{RELEASE}-qdrant" not in external.names("Service")
    assert external.of("StatefulSet") == []
    assert f"{RELEASE}-qdrant" not in external.names("PodDisruptionBudget")
    assert f"{RELEASE}-qdrant" not in external.names("NetworkPolicy")
    assert external.config()["common"]["store"] == {
        "kind": "qdrant",
        "url": "https://qdrant.vectors.svc.cluster.local:6333",
        "shard_number": 1,
        "replication_factor": 1,
        "write_consistency_factor": 1,
    }
    # an external cluster: the collection settings still reach the services, unchecked against
    # a node count the chart does not know
    sharded = render(
        VALUE_SETS["external-qdrant"]
        | {
            "qdrant": VALUE_SETS["external-qdrant"]["qdrant"]
            | {"collections": {"shardNumber": 4, "replicationFactor": 3}}
        }
    )
    assert sharded.of("StatefulSet") == []
    store = sharded.config()["common"]["store"]
    assert (store["shard_number"], store["replication_factor"]) == (4, 3)
    assert store["write_consistency_factor"] == 1


def test_qdrant_cluster() -> None:
    """qdrant.cluster.enabled: Qdrant's distributed mode as the official chart deploys it."""
    values = VALUE_SETS["qdrant-cluster"]["qdrant"]
    r = rendered("qdrant-cluster")
    name = f"{RELEASE}-qdrant"
    headless = f"{name}-headless"
    sts = r.one("StatefulSet", name)
    spec = sts["spec"]
    assert spec["replicas"] == values["replicaCount"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == headless
    pod = spec["template"]["spec"]
    c = container(sts)
    # the p2p port: on the container and the headless Service, not on the client Service
    assert port_of(c, "p2p") == 6335
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["QDRANT__CLUSTER__ENABLED"] == "true"
    assert env["QDRANT__CLUSTER__P2P__PORT"] == "6335"
    service = r.one("Service", headless)["spec"]
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["ports"]}["p2p"] == (
        6335,
        "p2p",
    )
    assert "p2p" not in {p["name"] for p in r.one("Service", name)["spec"]["ports"]}
    # pod 0 starts the cluster, the others bootstrap from it; each announces its own DNS name
    assert c["command"] == ["/bin/sh", "-c"]
    (script,) = c["args"]
    peer = f"{headless}.{NAMESPACE}.svc.cluster.local:6335"
    for ordinal in range(3):
        hostname = f"{name}-{ordinal}"
        run = subprocess.run(
            ["sh", "-c", script.replace("./entrypoint.sh", "echo")],
            env={"HOSTNAME": hostname, "PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            check=True,
        )
        argv = run.stdout.split()
        own = ["--uri", f"http://{hostname}.{peer}"]
        assert argv == (own if ordinal == 0 else ["--bootstrap", f"http://{name}-0.{peer}", *own])
    assert "exec ./entrypoint.sh" in script
    # spread over Kubernetes nodes where possible, one claim per pod
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": QDRANT_LABELS},
    }
    assert spec["selector"]["matchLabels"] == QDRANT_LABELS
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "storage"
    assert {"name": "storage", "mountPath": "/qdrant/storage"} in c["volumeMounts"]
    pdb = r.one("PodDisruptionBudget", name)["spec"]
    assert pdb == {"maxUnavailable": 1, "selector": {"matchLabels": QDRANT_LABELS}}
    # p2p only among the Qdrant pods; the services keep http and grpc
    policy = r.one("NetworkPolicy", name)
    ranker = {**QDRANT_LABELS, COMPONENT_LABEL: "ranker"}
    for port in ("http", "grpc"):
        assert admits(policy, ranker, port) and admits(policy, QDRANT_LABELS, port)
    assert admits(policy, QDRANT_LABELS, "p2p")
    assert not admits(policy, ranker, "p2p")
    assert not admits(policy, {**QDRANT_LABELS, "app.kubernetes.io/instance": "other"}, "p2p")
    # the collection settings reach the services' config
    store = r.config()["common"]["store"]
    assert store["url"] == f"http://{name}:6333"
    assert {k: store[k] for k in COLLECTION_KEYS.values()} == {
        "shard_number": 6,
        "replication_factor": 2,
        "write_consistency_factor": 1,
    }
    notes = r.files["teran/templates/NOTES.txt"]
    assert "A 3-node Qdrant cluster" in notes and "6333/cluster" in notes
    # a user affinity replaces the default; the cluster domain goes into every peer URI
    custom = render(
        {
            "qdrant": values
            | {
                "affinity": {"nodeAffinity": {}},
                "cluster": {"enabled": True, "clusterDomain": "k8s.example"},
            }
        }
    )
    custom_sts = custom.one("StatefulSet", name)
    assert custom_sts["spec"]["template"]["spec"]["affinity"] == {"nodeAffinity": {}}
    custom_script = container(custom_sts)["args"][0]
    assert f"http://{name}-0.{headless}.{NAMESPACE}.svc.k8s.example:6335" in custom_script
    assert "cluster.local" not in custom_script
    # no NetworkPolicy: nothing else changes
    open_policy = render({"qdrant": values, "networkPolicy": {"enabled": False}})
    assert open_policy.of("NetworkPolicy") == []
    assert open_policy.one("StatefulSet", name)["spec"]["replicas"] == 3


def test_monolith_is_one_deployment() -> None:
    r = rendered("monolith")
    (dep,) = r.of("Deployment")
    assert dep["metadata"]["name"] == f"{RELEASE}-monolith"
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    c = container(dep)
    assert c["args"][-2:] == ["--target", "all"]
    assert API_KEY_ENV not in {e["name"] for e in c["env"]}
    claim = r.one("PersistentVolumeClaim", f"{RELEASE}-store")
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["store"]["persistentVolumeClaim"]["claimName"] == f"{RELEASE}-store"
    assert {"name": "store", "mountPath": "/data"} in c["volumeMounts"]
    for kind in ("StatefulSet", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret"):
        assert r.of(kind) == [], kind
    assert r.names("Service") == {f"{RELEASE}-monolith"}
    assert r.names("NetworkPolicy") == {f"{RELEASE}-monolith"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"mode": "monolith", "monolith": {"replicaCount": 2}},
            "monolith.replicaCount must be 1, got 2",
        ),
        ({"qdrant": {"enabled": False}}, "mode=microservices needs a Qdrant"),
        ({"qdrant": {"external": {"url": "http://qdrant:6333"}}}, "are exclusive"),
        (
            {
                "mode": "monolith",
                "qdrant": {"enabled": False, "external": {"url": "http://q:6333"}},
            },
            "qdrant.external.url needs mode=microservices",
        ),
        (
            {"ranker": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}},
            "ranker.autoscaling: minReplicas (5) is above maxReplicas (2)",
        ),
        (
            {"textEncoder": {"resources": {"requests": {"cpu": None}}}},
            "set textEncoder.resources.requests.cpu",
        ),
        (
            {"imageEncoder": {"autoscaling": {"targetCPUUtilizationPercentage": 0}}},
            "imageEncoder.autoscaling needs targetCPUUtilizationPercentage",
        ),
        (
            {"imageEncoder": {"podDisruptionBudget": {"minAvailable": 1}}},
            "set minAvailable or maxUnavailable, not both",
        ),
        (
            {
                "ranker": {
                    "autoscaling": {"enabled": False},
                    "replicaCount": 2,
                    "podDisruptionBudget": {"minAvailable": 2, "maxUnavailable": None},
                }
            },
            "node drains would hang",
        ),
        ({"model": {"source": "pvc"}}, "model.source=pvc needs model.existingClaim"),
        ({"shutdown": {"terminationGracePeriodSeconds": 10}}, "at least 15"),
        (
            {"standbyModel": {"enabled": True, "source": "pvc"}},
            "standbyModel.source=pvc needs standbyModel.existingClaim",
        ),
        (
            {"standbyModel": {"enabled": True}},
            "standbyModel.image (teran-model-repo:0.1.0) is the live model's image",
        ),
        ({"upgrade": {"enabled": True}}, "upgrade.enabled needs a model version to move to"),
        (
            {"mode": "monolith", "upgrade": {"enabled": True}},
            "upgrade.enabled needs a model version to move to",
        ),
        (
            {
                "upgrade": {
                    "enabled": True,
                    "toVersion": "3f9a1c2b7d4e",
                    "activeDeadlineSeconds": 900,
                }
            },
            "upgrade.activeDeadlineSeconds (900) must exceed upgrade.rolloutTimeoutSeconds (900)",
        ),
        (
            {"qdrant": {"replicaCount": 3}},
            "qdrant.replicaCount=3 needs qdrant.cluster.enabled=true",
        ),
        (
            {"qdrant": {"collections": {"replicationFactor": 2}}},
            "qdrant.collections.replicationFactor (2) is above qdrant.replicaCount (1)",
        ),
        (
            {
                "qdrant": {
                    "replicaCount": 3,
                    "cluster": {"enabled": True},
                    "collections": {"replicationFactor": 4, "writeConsistencyFactor": 1},
                }
            },
            "qdrant.collections.replicationFactor (4) is above qdrant.replicaCount (3)",
        ),
        (
            {
                "qdrant": {
                    "replicaCount": 3,
                    "cluster": {"enabled": True},
                    "collections": {"replicationFactor": 2, "writeConsistencyFactor": 3},
                }
            },
            "qdrant.collections.writeConsistencyFactor (3) is above "
            "qdrant.collections.replicationFactor (2)",
        ),
        (
            {
                "qdrant": {
                    "enabled": False,
                    "external": {"url": "http://q:6333"},
                    "collections": {"replicationFactor": 2, "writeConsistencyFactor": 3},
                }
            },
            "qdrant.collections.writeConsistencyFactor (3) is above",
        ),
        (
            {
                "qdrant": {
                    "enabled": False,
                    "external": {"url": "http://q:6333"},
                    "cluster": {"enabled": True},
                }
            },
            "qdrant.cluster.enabled and qdrant.replicaCount size the built-in Qdrant",
        ),
        (
            {"qdrant": {"enabled": False, "external": {"url": "http://q:6333"}, "replicaCount": 3}},
            "an external Qdrant is sized by its own deployment",
        ),
    ],
)
def test_validate_refuses_bad_mixes(values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError) as caught:
        render(values)
    assert "validate.yaml" in str(caught.value)
    assert message in str(caught.value)


def test_notes_and_helm_test_pod() -> None:
    for value_set, target in (("defaults", "ranker"), ("monolith", "monolith")):
        r = rendered(value_set)
        notes = r.files["teran/templates/NOTES.txt"]
        assert (
            f"kubectl --namespace {NAMESPACE} port-forward svc/{RELEASE}-{target} 50051:50051"
            in (notes)
        )
        assert f"helm test {RELEASE}" in notes
        (pod,) = r.of("Pod")
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        c = pod["spec"]["containers"][0]
        assert {"name": "TERAN_RANKER", "value": f"{RELEASE}-{target}:50051"} in c["env"]
        assert "teran.v1.Ranker" in c["command"][-1]
        assert f"{RELEASE}-{target}" in r.names("Service")
    assert (
        "svc/teran-triton 8000:8000 8002:8002"
        in rendered("defaults").files["teran/templates/NOTES.txt"]
    )
