"""A Triton model repository for TERAN's encoders, plus a manifest the services read.

Layout: `<repo>/<model>/config.pbtxt`, `<repo>/<model>/<version>/model.onnx` and, for the python
backend, `<repo>/<model>/<version>/model.py` (`teran/triton_python_model.py`), with
`<repo>/teran_manifest.json` beside the models. Two backends run the same ONNX file:

- "onnxruntime": NVIDIA's Triton images (production GPU clusters); KIND_GPU on request.
- "python": any Triton with the python backend, such as the one inside nvidia-pytriton; CPU.

Writing a new version leaves the older version folders in place (Triton serves the latest), so
an upgrade is a new folder plus a config refresh, not a rewrite.

A `name_prefix` ("next_") renames the served models (`next_teran_text_encoder`: folder, config
name and manifest) so that two exports can sit in one tritonserver (several
`--model-repository` paths) without colliding, e.g. the old and the new model during an upgrade.
The services read the served names from the manifest.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from teran.contract import (  # noqa: F401 - re-exported for the repository's users
    BATCHING,
    IMAGE_MODEL,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    PIXELS_MODEL,
    TEXT_MODEL,
    Batching,
    read_manifest,
)
from teran.export import (
    ONNX_FILE,
    ModelSpec,
    TensorSpec,
    export_onnx,
    model_specs,
)
from teran.model import Teran
from teran.regions import GridRegionExtractor

BACKENDS = ("onnxruntime", "python")
PYTHON_MODEL_FILE = "model.py"
_PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_python_model.py")

_TRITON_DTYPES = {"int64": "TYPE_INT64", "float32": "TYPE_FP32"}

NAME_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
"""A model name prefix: a letter or digit, then up to 31 letters, digits, "_" or "-"."""


def check_name_prefix(name_prefix: str) -> str:
    """`name_prefix` when it is empty or a valid prefix; ValueError naming it otherwise."""
    if name_prefix and NAME_PREFIX_PATTERN.fullmatch(name_prefix) is None:
        raise ValueError(
            f"name_prefix {name_prefix!r} is not a valid model name prefix: it must be empty or "
            f"match ^{NAME_PREFIX_PATTERN.pattern}$"
        )
    return name_prefix


def _dims(values: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(v) for v in values) + " ]"


def _tensor(spec: TensorSpec, indent: str) -> str:
    # a per-row scalar ([B] with the batch axis) is declared [1] and reshaped, as Triton asks
    lines = [
        f'{indent}name: "{spec.name}"',
        f"{indent}data_type: {_TRITON_DTYPES[spec.dtype]}",
        f"{indent}dims: {_dims(spec.dims or (1,))}",
    ]
    if not spec.dims:
        lines.append(f"{indent}reshape: {{ shape: [ ] }}")
    return "\n".join(lines)


def config_pbtxt(
    spec: ModelSpec,
    backend: str,
    batching: Batching,
    gpu: bool = False,
    instances: int = 1,
    intra_op_threads: int = 0,
    name: str | None = None,
) -> str:
    """The `config.pbtxt` text of one model for `backend` ("onnxruntime" or "python");
    `name`: the served name (default `spec.name`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if gpu and backend == "python":
        raise ValueError("the python backend runs onnxruntime on CPU: use backend='onnxruntime'")
    kind = "KIND_GPU" if gpu else "KIND_CPU"

    def block(tensors: tuple[TensorSpec, ...]) -> str:
        return ",\n".join("  {\n" + _tensor(t, "    ") + "\n  }" for t in tensors)

    parts = [
        f'name: "{name or spec.name}"',
        f'backend: "{backend}"',
        f"max_batch_size: {batching.max_batch_size}",
        "version_policy: { latest: { num_versions: 1 } }",
        "input [\n" + block(spec.inputs) + "\n]",
        "output [\n" + block(spec.outputs) + "\n]",
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]",
        "dynamic_batching {\n"
        f"  preferred_batch_size: {_dims(batching.preferred)}\n"
        f"  max_queue_delay_microseconds: {batching.max_queue_delay_us}\n"
        "}",
    ]
    if backend == "python":
        parts.append(
            'parameters: { key: "intra_op_threads" value: { string_value: '
            f'"{intra_op_threads}" }} }}'
        )
    return "\n".join(parts) + "\n"


def _install_version(source: Path, target: Path, backend: str) -> None:
    """Copy an exported model folder (model.onnx and any external data) into `target`."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source.parent, target)
    if source.name != ONNX_FILE:
        (target / source.name).rename(target / ONNX_FILE)
    if backend == "python":
        shutil.copyfile(_PYTHON_MODEL_SOURCE, target / PYTHON_MODEL_FILE)


def manifest(
    model: Teran,
    specs: dict[str, ModelSpec],
    backend: str,
    version: int,
    extractor: GridRegionExtractor | None = None,
    meta: dict[str, Any] | None = None,
    name_prefix: str = "",
) -> dict[str, Any]:
    """What a service needs to call the models and read their outputs, without the checkpoint.

    Model names (the `models` keys, `text_model`, `image_model`, `pixels_model`) are the served
    ones: `name_prefix` + the name in `specs`.
    """
    cfg = model.cfg
    prefix = check_name_prefix(name_prefix)
    return {
        "format": MANIFEST_FORMAT,
        "format_version": 1,
        "backend": backend,
        "model_version": version,
        "name_prefix": prefix,
        "models": {
            prefix + name: {
                "inputs": [asdict(t) for t in spec.inputs],
                "outputs": [asdict(t) for t in spec.outputs],
                "max_batch_size": BATCHING[name].max_batch_size,
            }
            for name, spec in specs.items()
        },
        "text_model": prefix + TEXT_MODEL,
        "image_model": prefix + IMAGE_MODEL,
        "pixels_model": prefix + PIXELS_MODEL if PIXELS_MODEL in specs else None,
        "embed_dim": cfg.embed_dim,
        "feat_dim": cfg.vision.feat_dim,
        "max_tokens": cfg.text.max_tokens,
        "alignment": cfg.alignment,
        "grid": extractor.grid if extractor is not None else None,
        "extractor": asdict(extractor.cfg) if extractor is not None else None,
        "model_config": cfg.to_dict(),
        "checkpoint": meta or {},
    }


def build_repository(
    model: Teran,
    repo: str | Path,
    extractor: GridRegionExtractor | None = None,
    backend: str = "python",
    version: int = 1,
    gpu: bool = False,
    meta: dict[str, Any] | None = None,
    files: dict[str, Path] | None = None,
    name_prefix: str = "",
) -> dict[str, Path]:
    """Export `model` (or reuse `files` from `export_onnx`) into a Triton repository.

    Args:
        extractor: also serve the pixels model (grid regions computed in the graph).
        backend: "python" (CPU, any Triton with the python backend) or "onnxruntime".
        version: the version folder to write; other versions already there are kept.
        gpu: KIND_GPU instances (onnxruntime backend only).
        meta: checkpoint facts for the manifest (path, metadata).
        files: {model name: model.onnx} already exported for this model and extractor.
        name_prefix: served names are `<name_prefix><model name>` (folders, config.pbtxt names,
            manifest), so that repositories of two models can share one tritonserver. Empty, or
            a letter or digit then up to 31 letters, digits, "_" or "-"; ValueError otherwise.

    Returns:
        {model name (unprefixed, as in `files`): the model's folder in the repository}.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if version < 1:
        raise ValueError(f"version must be >= 1, got {version}")
    if gpu and backend == "python":
        raise ValueError("the python backend runs onnxruntime on CPU: use backend='onnxruntime'")
    check_name_prefix(name_prefix)
    repo = Path(repo)
    specs = model_specs(model, extractor)
    with tempfile.TemporaryDirectory(prefix="teran-export-") as scratch:
        if files is None:
            files = export_onnx(model, extractor, scratch)
        missing = sorted(set(specs) - set(files))
        if missing:
            raise ValueError(f"no exported file for {missing}")
        folders: dict[str, Path] = {}
        for name, spec in specs.items():
            served = name_prefix + name
            folder = repo / served
            folder.mkdir(parents=True, exist_ok=True)
            _install_version(files[name], folder / str(version), backend)
            text = config_pbtxt(spec, backend, BATCHING[name], gpu=gpu, name=served)
            (folder / "config.pbtxt").write_text(text)
            folders[name] = folder
    data = manifest(model, specs, backend, version, extractor, meta, name_prefix)
    (repo / MANIFEST_FILE).write_text(json.dumps(data, indent=2, default=str) + "\n")
    return folders
