"""Shared test fixtures: the reference fixtures folder and small real models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from teran import SentenceTokenizer, Teran, create_model
from teran.checkpoint import save_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED = Path(os.environ.get("TERAN_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
REFERENCE = SHARED / "reference"
FIXTURES = ["teran-tiny", "teran-tiny-shared"]


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        raise FileNotFoundError(f"reference fixtures not found at {REFERENCE}; set TERAN_SHARED")
    return REFERENCE


@pytest.fixture(scope="session")
def tiny_minilm() -> tuple[Teran, SentenceTokenizer]:
    """teran-minilm-tiny: the real MiniLM backbone (2 layers kept), seeded random heads."""
    torch.manual_seed(0)
    return create_model("teran-minilm-tiny")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """teran-minilm-tiny saved with its backbone, as the services load a model; one per module,
    so a module that writes beside it cannot disturb another."""
    torch.manual_seed(0)
    model, tokenizer = create_model("teran-minilm-tiny")
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(model, tokenizer, folder, bundled_backbone=True)
    return folder
