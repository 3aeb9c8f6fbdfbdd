"""Reading parity fixtures in the format of the reference fixtures (shared/reference/README.md).

A fixture folder holds a reference checkpoint, region inputs, captions and the reference's
outputs; any fixture in that format (other seeds, sizes, real weights) is read the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from teran.alignment import AlignmentMode
from teran.checkpoint import import_reference_checkpoint
from teran.embeddings import ImageEmbedding, TextEmbedding
from teran.model import Teran
from teran.tokenizer import SentenceTokenizer, TokenBatch

TOLERANCE = 1e-4


@dataclass
class Fixture:
    folder: Path
    features: np.ndarray
    boxes: np.ndarray
    n_regions: np.ndarray
    captions: list[str]
    expected: dict[str, np.ndarray]

    @classmethod
    def load(cls, folder: str | Path) -> Fixture:
        folder = Path(folder)
        for name in ("checkpoint.pth.tar", "inputs.npz", "captions.txt", "expected.npz"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"fixture {folder} lacks {name}")
        inputs = np.load(folder / "inputs.npz")
        with np.load(folder / "expected.npz") as expected:
            exp = {k: expected[k] for k in expected.files}
        captions = (folder / "captions.txt").read_text(encoding="utf-8").splitlines()
        return cls(
            folder=folder,
            features=inputs["features"],
            boxes=inputs["boxes"],
            n_regions=inputs["n_regions"],
            captions=[c for c in captions if c.strip()],
            expected=exp,
        )


@dataclass
class FixtureRun:
    """This project's outputs on a fixture's inputs."""

    model: Teran
    tokens: TokenBatch
    images: ImageEmbedding
    texts: TextEmbedding


def run_fixture(fixture: Fixture, backbone: str | Path | None = None) -> FixtureRun:
    """The fixture's reference checkpoint, imported, on the fixture's inputs."""
    model, tokenizer, _ = import_reference_checkpoint(
        fixture.folder / "checkpoint.pth.tar", backbone=backbone
    )
    return encode_fixture(model, tokenizer, fixture)


def encode_fixture(model: Teran, tokenizer: SentenceTokenizer, fixture: Fixture) -> FixtureRun:
    """Any model on the fixture's inputs (e.g. one saved and loaded again)."""
    tokens = tokenizer(fixture.captions)
    with torch.no_grad():
        images = model.encode_image(
            torch.from_numpy(fixture.features),
            torch.from_numpy(fixture.boxes),
            torch.from_numpy(fixture.n_regions),
        )
        texts = model.encode_text(tokens.ids, tokens.lengths)
    return FixtureRun(model=model, tokens=tokens, images=images, texts=texts)


def compare(fixture: Fixture, run: FixtureRun) -> dict[str, float]:
    """Max abs difference per compared quantity ("What a parity check compares")."""
    exp = fixture.expected
    img_len, cap_len = exp["img_len"], exp["cap_len"]
    diffs: dict[str, float] = {}
    if not np.array_equal(run.images.lengths.numpy(), img_len):
        raise AssertionError(f"image lengths {run.images.lengths.tolist()} != {img_len.tolist()}")
    if not np.array_equal(run.tokens.lengths.numpy(), cap_len):
        diffs["token_ids"] = float("inf")
    else:
        diffs["token_ids"] = float(
            max(
                np.abs(run.tokens.ids[j, :n].numpy() - exp["token_ids"][j, :n]).max()
                for j, n in enumerate(cap_len)
            )
        )
    slots = run.images.slots.numpy()
    tokens = run.texts.tokens.numpy()
    diffs["img_emb"] = _ragged_diff(slots, exp["img_emb"], img_len)
    if diffs["token_ids"] == 0:
        diffs["cap_emb"] = _ragged_diff(tokens, exp["cap_emb"], cap_len)
    else:
        diffs["cap_emb"] = float("inf")
    diffs["img_emb_aggr"] = float(
        np.abs(run.images.global_vector.numpy() - exp["img_emb_aggr"]).max()
    )
    diffs["cap_emb_aggr"] = float(
        np.abs(run.texts.global_vector.numpy() - exp["cap_emb_aggr"]).max()
    )
    with torch.no_grad():
        for mode in AlignmentMode:
            scores = run.model.score(run.images, run.texts, mode).numpy()
            diffs[f"scores_{mode.value}_nopad"] = float(
                np.abs(scores - exp[f"scores_{mode.value}_nopad"]).max()
            )
    return diffs


def _ragged_diff(ours: np.ndarray, theirs: np.ndarray, lengths: np.ndarray) -> float:
    return float(max(np.abs(ours[i, :n] - theirs[i, :n]).max() for i, n in enumerate(lengths)))
