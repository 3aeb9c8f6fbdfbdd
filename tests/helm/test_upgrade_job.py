"""The model upgrade Job and the standby model: off by default, its command line, RBAC,
and the standby model mounted everywhere."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from services.config import CommonCfg, ModelCfg, load_settings
from tests.helm.chart import (
    COMPONENT_LABEL,
    NAMESPACE,
    RELEASE,
    SERVICES,
    UPGRADE_SETS,
    VALUE_SETS,
    chart_values,
    container,
    job_command,
    pod_specs,
    render,
    rendered,
    standby_entry,
)

# --- model upgrades -------------------------------------------------------------------------


def test_upgrade_is_off_by_default() -> None:
    defaults = chart_values()
    assert defaults["upgrade"]["enabled"] is False
    assert defaults["standbyModel"]["enabled"] is False
    for value_set in VALUE_SETS:
        if value_set in UPGRADE_SETS:
            continue
        r = rendered(value_set)
        for kind in ("Job", "Role", "RoleBinding"):
            assert r.of(kind) == [], (value_set, kind)
        assert f"{RELEASE}-upgrade" not in r.names("ServiceAccount")
        assert "standby" not in r.one("ConfigMap", RELEASE)["data"]["config.yaml"]
        for name, pod in pod_specs(r):
            assert "standby" not in json.dumps(pod), (value_set, name)
        assert "upgrade" not in r.files["teran/templates/NOTES.txt"].lower()


def test_upgrade_job_command_line() -> None:
    r = render(VALUE_SETS["upgrade"], revision=7)
    (job,) = r.of("Job")
    assert job["apiVersion"] == "batch/v1"
    # immutable: a new Job per helm revision
    assert job["metadata"]["name"] == f"{RELEASE}-upgrade-7"
    assert rendered("upgrade").one("Job", f"{RELEASE}-upgrade-1")
    assert job["spec"]["backoffLimit"] == 3
    assert job["spec"]["activeDeadlineSeconds"] == 86400
    assert job["spec"]["ttlSecondsAfterFinished"] == 604800
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["template"]["metadata"]["labels"][COMPONENT_LABEL] == "upgrade"
    c = container(job)
    assert c["image"] == "teran:0.1.0"
    assert job_command(job) == [
        "python",
        "-m",
        "services.upgrade",
        "run",
        "--address",
        f"{RELEASE}-image-encoder:50051",
        "--grace-s",
        "30",
        "--wait-rollout",
        "--namespace",
        NAMESPACE,
        "--selector",
        f"app.kubernetes.io/instance={RELEASE}",
        "--rollout-timeout-s",
        "900",
    ]
    # the address is the image encoder's Service (Admin is served by the image_encoder target)
    # on its gRPC port, and the selector is the one every Deployment of the release carries
    command = job_command(job)
    host, port = command[command.index("--address") + 1].rsplit(":", 1)
    svc = r.one("Service", host)
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]}["grpc"] == int(port)
    assert svc["spec"]["selector"][COMPONENT_LABEL] == "image-encoder"
    for dep in r.of("Deployment"):
        assert dep["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE

    monolith = rendered("monolith-upgrade").one("Job", f"{RELEASE}-upgrade-1")
    command = job_command(monolith)
    assert command[command.index("--address") + 1] == f"{RELEASE}-monolith:50051"
    assert command[command.index("--to") + 1] == "3f9a1c2b7d4e"
    assert command[command.index("--grace-s") + 1] == "10"
    assert "--wait-rollout" in command

    # no rollout wait: no rollout flags, and the services' ServiceAccount without a token
    quick = render(
        {
            "upgrade": {
                "enabled": True,
                "toVersion": "3f9a1c2b7d4e",
                "waitForRollout": False,
                "graceSeconds": 0,
                "backoffLimit": 0,
            },
            "imageEncoder": {"service": {"port": 50070}},
        }
    )
    (job,) = quick.of("Job")
    assert job_command(job)[3:] == [
        "run",
        "--address",
        f"{RELEASE}-image-encoder:50070",
        "--to",
        "3f9a1c2b7d4e",
        "--grace-s",
        "0",
    ]
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == RELEASE
    assert pod["automountServiceAccountToken"] is False
    # a rollback to a version already loaded needs no standby model
    assert "standby" not in json.dumps(quick.docs)

    # a long fullname is shortened, never the revision
    long = render({**VALUE_SETS["upgrade"], "fullnameOverride": "x" * 63}, revision=12345)
    (job,) = long.of("Job")
    assert len(job["metadata"]["name"]) <= 63
    assert job["metadata"]["name"].endswith("x-upgrade-12345")


def test_upgrade_job_rbac() -> None:
    r = rendered("upgrade")
    name = f"{RELEASE}-upgrade"
    (job,) = r.of("Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == name and pod["automountServiceAccountToken"] is True
    sa = r.one("ServiceAccount", name)
    assert sa["automountServiceAccountToken"] is True
    role = r.one("Role", name)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments", "statefulsets"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    (binding,) = r.of("RoleBinding")
    assert binding["metadata"]["name"] == name
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": name,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]
    # nothing cluster-wide, and the services' own ServiceAccount stays without API access
    assert not {"ClusterRole", "ClusterRoleBinding"} & {d["kind"] for d in r.docs}
    services_sa = r.one("ServiceAccount", RELEASE)
    assert services_sa["automountServiceAccountToken"] is False
    for other, spec in pod_specs(r):
        if other != job["metadata"]["name"]:
            assert spec["serviceAccountName"] == RELEASE, other
    # the monolith's Job waits for the rollout the same way
    mono = rendered("monolith-upgrade")
    assert mono.one("Role", name)["rules"] == role["rules"]
    assert mono.one("RoleBinding", name)["subjects"] == binding["subjects"]
    # no rollout wait: no API access at all
    quick = render({"upgrade": {"enabled": True, "toVersion": "v2", "waitForRollout": False}})
    assert quick.of("Role") == [] and quick.of("RoleBinding") == []
    assert quick.names("ServiceAccount") == {RELEASE}


def test_standby_model_is_mounted_everywhere() -> None:
    r = rendered("upgrade")
    model_pods = [f"{RELEASE}-{c}" for c in SERVICES] + [f"{RELEASE}-triton"]
    for name in model_pods:
        dep = r.one("Deployment", name)
        spec = dep["spec"]["template"]["spec"]
        inits = {i["name"]: i for i in spec["initContainers"]}
        assert set(inits) == {"model", "standby-model"}, name
        standby = inits["standby-model"]
        assert standby["image"] == "teran-model-repo:0.2.0"
        assert inits["model"]["image"] == "teran-model-repo:0.1.0"
        # the model-repo image's entrypoint, into the standby volume
        assert standby["command"] == inits["model"]["command"]
        assert standby["volumeMounts"] == [{"name": "standby", "mountPath": "/models"}]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["standby"] == {"name": "standby", "emptyDir": {"sizeLimit": "2Gi"}}
        mounts = {m["mountPath"]: m for m in container(dep)["volumeMounts"]}
        assert mounts["/standby"] == {"name": "standby", "mountPath": "/standby", "readOnly": True}
        assert mounts["/models"]["name"] == "models"
    # Triton serves both repositories (the standby's model names carry a prefix)
    args = container(r.one("Deployment", f"{RELEASE}-triton"))["args"]
    repos = [a for a in args if a.startswith("--model-repository=")]
    assert repos == [
        "--model-repository=/models/repository",
        "--model-repository=/standby/repository",
    ]
    assert r.config()["common"]["standby_models"] == [standby_entry(True)]
    assert r.config()["common"]["model"] == {
        "checkpoint": "/models/checkpoint",
        "repository": "/models/repository",
    }
    # the Job and Qdrant get no model
    for kind, name in (("Job", f"{RELEASE}-upgrade-1"), ("StatefulSet", f"{RELEASE}-qdrant")):
        assert "standby" not in json.dumps(r.one(kind, name)), name
    notes = r.files["teran/templates/NOTES.txt"]
    assert "teran-model-repo:0.2.0" in notes
    assert f"kubectl --namespace {NAMESPACE} logs -f job/{RELEASE}-upgrade-1" in notes

    # from a claim, in the monolith: no init container for it, the claim read-only, no repository
    mono = rendered("monolith-upgrade")
    dep = mono.one("Deployment", f"{RELEASE}-monolith")
    spec = dep["spec"]["template"]["spec"]
    assert [i["name"] for i in spec["initContainers"]] == ["model"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["standby"]["persistentVolumeClaim"] == {
        "claimName": "teran-model-previous",
        "readOnly": True,
    }
    assert {"name": "standby", "mountPath": "/standby", "readOnly": True} in container(dep)[
        "volumeMounts"
    ]
    assert mono.config()["common"]["standby_models"] == [standby_entry(False)]

    # Triton off: in-process inference needs no repository for the standby either
    inprocess = render({**VALUE_SETS["upgrade"], "triton": {"enabled": False}})
    assert inprocess.config()["common"]["standby_models"] == [standby_entry(False)]


def test_standby_model_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("TERAN_")]:
        monkeypatch.delenv(var)
    r = rendered("upgrade")
    config = r.config()
    if "standby_models" not in CommonCfg.model_fields:
        # services/config.py gains common.standby_models (same shape as common.model) with the
        # model upgrades, landing in parallel; until then Settings forbids the key, so check the
        # rendered structure. Once the field exists, the branch below loads it.
        (entry,) = config["common"]["standby_models"]
        assert set(entry) == {"checkpoint", "repository"}
        assert entry["checkpoint"].startswith("/standby/")
        assert entry["repository"].startswith("/standby/")
        assert set(entry) <= set(ModelCfg.model_fields)
        return
    path = tmp_path / "config.yaml"
    path.write_text(r.one("ConfigMap", RELEASE)["data"]["config.yaml"])
    settings = load_settings(path, target="image_encoder")
    dumped = settings.common.model_dump(mode="json", exclude_none=True)
    assert dumped["standby_models"] == [standby_entry(True)]
    assert dumped["model"]["checkpoint"] == "/models/checkpoint"
