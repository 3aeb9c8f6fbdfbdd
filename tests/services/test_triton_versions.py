"""Two model versions in ONE real tritonserver, as during a zero-downtime upgrade.

The shipped demo checkpoint (models/teran-synthetic-tiny) is exported into two repositories:
one with `python -m trainer.export --name-prefix next_` (the CLI, ONNX conversion included) and
one without a prefix, built by `build_repository` from the same ONNX files (the conversion takes
~25 s on CPU; doing it twice would only repeat it). One tritonserver serves both repositories,
and a `TritonBackend` per repository must give the same vectors while calling its own models.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from typer.testing import CliRunner

from services.config import ModelCfg
from services.inference.triton import TritonBackend
from teran.checkpoint import load_checkpoint
from teran.export import IMAGE_MODEL, ONNX_FILE, PIXELS_MODEL, TEXT_MODEL
from teran.regions import GridRegionExtractor
from teran.triton_repo import MANIFEST_FILE, build_repository, read_manifest
from teran.tritonserver import TritonServer
from trainer.export import app as export_cli

CHECKPOINT = Path(__file__).resolve().parents[2] / "models" / "teran-synthetic-tiny"
PREFIX = "next_"
BASE = (TEXT_MODEL, IMAGE_MODEL, PIXELS_MODEL)
SENTENCES = [
    "a red square next to a blue circle.",
    "two green triangles above a yellow star",
    "A dog.",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repositories(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(unprefixed repository, "next_" repository) of the demo checkpoint."""
    root = tmp_path_factory.mktemp("versions")
    current, upcoming = root / "current", root / "next"
    result = CliRunner().invoke(
        export_cli,
        [str(CHECKPOINT), str(upcoming), "--name-prefix", PREFIX, "--no-check"],
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {PREFIX}{IMAGE_MODEL}, {PREFIX}{PIXELS_MODEL}, {PREFIX}{TEXT_MODEL}" in (
        result.output
    )
    model, _ = load_checkpoint(CHECKPOINT)
    assert model.cfg.vision.extractor is not None
    files = {name: upcoming / f"{PREFIX}{name}" / "1" / ONNX_FILE for name in BASE}
    meta = read_manifest(upcoming)["checkpoint"]  # the same checkpoint facts as the CLI wrote
    folders = build_repository(
        model,
        current,
        extractor=GridRegionExtractor(model.cfg.vision.extractor),
        meta=meta,
        files=files,
    )
    assert {name: folder.name for name, folder in folders.items()} == {n: n for n in BASE}
    return current, upcoming


@pytest.fixture(scope="module")
def server(repositories: tuple[Path, Path]) -> Iterator[TritonServer]:
    with TritonServer(list(repositories)) as running:
        yield running


def _config(folder: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def test_prefixed_repository_names_every_model_with_the_prefix(
    repositories: tuple[Path, Path],
) -> None:
    current, upcoming = repositories
    prefixed = {PREFIX + name for name in BASE}
    assert {p.name for p in upcoming.iterdir()} == prefixed | {MANIFEST_FILE}
    assert {p.name for p in current.iterdir()} == set(BASE) | {MANIFEST_FILE}
    for name in prefixed:
        assert _config(upcoming / name).name == name
        assert sorted(p.name for p in (upcoming / name / "1").iterdir()) == [
            "model.onnx",
            "model.py",
        ]
    for name in BASE:
        assert _config(current / name).name == name
    ours, theirs = read_manifest(upcoming), read_manifest(current)
    assert ours["name_prefix"] == PREFIX and theirs["name_prefix"] == ""
    assert ours["text_model"] == PREFIX + TEXT_MODEL
    assert ours["image_model"] == PREFIX + IMAGE_MODEL
    assert ours["pixels_model"] == PREFIX + PIXELS_MODEL
    assert set(ours["models"]) == prefixed and set(theirs["models"]) == set(BASE)
    # apart from the names, the two manifests describe the same models
    assert [ours["models"][PREFIX + n] for n in BASE] == [theirs["models"][n] for n in BASE]
    for key in ("model_config", "checkpoint", "embed_dim", "feat_dim", "extractor", "grid"):
        assert ours[key] == theirs[key], key


def _counts(
    client: grpcclient.InferenceServerClient, names: list[str], until: dict[str, int] | None = None
) -> dict[str, int]:
    """Rows each model has run; with `until`, waits (up to 10 s) for those minimum counts,
    since Triton updates its statistics after the responses go out."""
    deadline = time.monotonic() + 10
    while True:
        counts = {}
        for name in names:
            stats = client.get_inference_statistics(name, as_json=True)["model_stats"][0]
            counts[name] = int(stats.get("inference_count", 0))
        settled = all(counts[name] >= least for name, least in (until or {}).items())
        if settled or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def test_one_tritonserver_serves_both_versions(
    repositories: tuple[Path, Path], server: TritonServer
) -> None:
    current, upcoming = repositories
    assert server.repos == (current.resolve(), upcoming.resolve())
    everything = [*BASE, *(PREFIX + name for name in BASE)]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        index = client.get_model_repository_index(as_json=True)["models"]
        assert {m["name"]: m.get("state") for m in index} == dict.fromkeys(everything, "READY")

        model, tokenizer = load_checkpoint(CHECKPOINT)
        old = TritonBackend(server.grpc_url, ModelCfg(checkpoint=CHECKPOINT, repository=current))
        new = TritonBackend(server.grpc_url, ModelCfg(checkpoint=CHECKPOINT, repository=upcoming))
        try:
            assert old.models == BASE
            assert new.models == tuple(PREFIX + name for name in BASE)
            assert new.max_batch[PREFIX + TEXT_MODEL] == 64
            assert old.healthy() and new.healthy()

            tokens = tokenizer(SENTENCES)
            ids, lengths = tokens.ids.numpy(), tokens.lengths.numpy()
            before = _counts(client, everything)
            ours = new.encode_text(ids, lengths)
            target = PREFIX + TEXT_MODEL
            after = _counts(client, everything, until={target: before[target] + len(SENTENCES)})
            grown = {name for name in everything if after[name] != before[name]}
            assert grown == {PREFIX + TEXT_MODEL}, (before, after)
            assert after[PREFIX + TEXT_MODEL] - before[PREFIX + TEXT_MODEL] == len(SENTENCES)

            theirs = old.encode_text(ids, lengths)
            assert ours.shape == theirs.shape == (len(SENTENCES), ids.shape[1], 256)
            assert np.abs(ours - theirs).max() <= 1e-5
            with torch.no_grad():
                reference = model.encode_text(tokens.ids, tokens.lengths).tokens.numpy()
            assert np.abs(ours - reference).max() <= 1e-4
            assert np.abs(reference).max() > 0.01  # non-trivial vectors

            # more rows than the text model's max_batch_size: the prefixed name's limit from
            # the manifest splits the call (an unknown name would send all 70 rows at once)
            many = tokenizer([SENTENCES[i % len(SENTENCES)] for i in range(70)])
            words = new.encode_text(many.ids.numpy(), many.lengths.numpy())
            assert words.shape == (70, *ours.shape[1:])
            assert np.abs(words[: len(SENTENCES)] - ours).max() <= 1e-5

            # the pixels model is found under its prefixed name too
            pixels = np.random.default_rng(0).uniform(-1, 1, (2, 3, 224, 224)).astype(np.float32)
            new_slots, new_boxes = new.encode_pixels(pixels)
            old_slots, old_boxes = old.encode_pixels(pixels)
            assert np.abs(new_slots - old_slots).max() <= 1e-5
            assert np.array_equal(new_boxes, old_boxes)
        finally:
            old.close()
            new.close()
    finally:
        client.close()
