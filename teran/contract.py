"""What the exported models, their Triton repository and the services agree on, readable
without torch: model and tensor names, each model's batching, the repository's manifest and a
checkpoint's header. A Triton-backed service needs these and none of the model code."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEXT_MODEL = "teran_text_encoder"
IMAGE_MODEL = "teran_image_encoder"
PIXELS_MODEL = "teran_image_pixels_encoder"

TOKEN_IDS = "TOKEN_IDS"
LENGTHS = "LENGTHS"
WORD_EMBEDDINGS = "WORD_EMBEDDINGS"
FEATURES = "FEATURES"
BOXES = "BOXES"
N_REGIONS = "N_REGIONS"
REGION_EMBEDDINGS = "REGION_EMBEDDINGS"
PIXELS = "PIXELS"
REGION_BOXES = "REGION_BOXES"


@dataclass(frozen=True)
class Batching:
    """Triton's batch limit and dynamic batcher settings for one model."""

    max_batch_size: int
    preferred: tuple[int, ...]
    max_queue_delay_us: int


BATCHING: dict[str, Batching] = {
    # queries arrive one by one online: a short wait buys batches without hurting latency much
    TEXT_MODEL: Batching(64, (8, 16, 32, 64), 2000),
    # images come in bulk from indexing jobs: heavier, larger waits are fine
    IMAGE_MODEL: Batching(32, (8, 16, 32), 5000),
    PIXELS_MODEL: Batching(32, (8, 16, 32), 5000),
}

MANIFEST_FILE = "teran_manifest.json"
MANIFEST_FORMAT = "teran-triton-repository"


def read_manifest(repo: str | Path) -> dict[str, Any]:
    """The manifest a repository build wrote; ValueError when the file is another format."""
    path = Path(repo) / MANIFEST_FILE
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not a {MANIFEST_FORMAT} manifest")
    return data


CHECKPOINT_FORMAT = "teran-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
CONFIG_FILE = "teran_config.json"
WEIGHTS_FILE = "model.safetensors"


def read_header(folder: str | Path) -> dict[str, Any]:
    """A checkpoint folder's header (its configuration and metadata), without its weights."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a TERAN checkpoint folder: {CONFIG_FILE} missing")
    header: dict[str, Any] = json.loads(path.read_text())
    if (
        header.get("format") != CHECKPOINT_FORMAT
        or header.get("version") != CHECKPOINT_FORMAT_VERSION
    ):
        raise ValueError(
            f"{path}: format {header.get('format')!r} v{header.get('version')} is not "
            f"{CHECKPOINT_FORMAT!r} v{CHECKPOINT_FORMAT_VERSION}"
        )
    return header


def model_version(folder: str | Path) -> str:
    """A short identifier of a checkpoint's weights: stored vectors are tied to it."""
    digest = hashlib.sha256()
    with (Path(folder) / WEIGHTS_FILE).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]
