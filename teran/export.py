"""Export TERAN's encoders to ONNX: the files Triton serves and the tensor names services call.

Three models, each with a dynamic batch axis (and token / region axes where they vary):

- `teran_text_encoder`: TOKEN_IDS int64 [B, T], LENGTHS int64 [B] -> WORD_EMBEDDINGS [B, T, D].
- `teran_image_encoder`: FEATURES float32 [B, R, F], BOXES float32 [B, R, 4], N_REGIONS int64 [B]
  -> REGION_EMBEDDINGS float32 [B, R + 1, D] (slot 0 is the CLS slot; slots past
  n_regions + 1 are 0, so the output width is R + 1 whatever the counts).
- `teran_image_pixels_encoder`: PIXELS float32 [B, 3, S, S] in [0, 1] -> REGION_EMBEDDINGS
  [B, G*G + 1, D] and REGION_BOXES float32 [B, G*G, 4] (the grid extractor runs in the graph).

The towers call `Teran.encode_*` themselves (one code path for PyTorch, ONNX and Triton): under
`torch.export` those skip their value checks and keep the image width at R + 1. `parity` and
the tests hold the ONNX files to PyTorch within 1e-4.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import warnings
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from teran.contract import (
    BOXES,
    FEATURES,
    IMAGE_MODEL,
    LENGTHS,
    N_REGIONS,
    PIXELS,
    PIXELS_MODEL,
    REGION_BOXES,
    REGION_EMBEDDINGS,
    TEXT_MODEL,
    TOKEN_IDS,
    WORD_EMBEDDINGS,
)
from teran.model import Teran
from teran.regions import GridRegionExtractor
from teran.tokenizer import SentenceTokenizer

ONNX_FILE = "model.onnx"
OPSET = 18
"""The dynamo exporter's native opset (17+ is required for LayerNormalization)."""
TOLERANCE = 1e-4
_SINGLE_FILE_LIMIT = 1536 * 2**20
"""Weights above this go to `<file>.data` next to the model: protobuf caps one file at 2 GiB."""

DEFAULT_SENTENCES = (
    "A dog.",
    "Two people ride bicycles along a river at sunset.",
    "A red double-decker bus drives down a busy city street full of people and cars.",
)


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output; `dims` excludes the batch axis and -1 marks a dynamic axis."""

    name: str
    dtype: str
    """numpy dtype name: "int64" or "float32"."""
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ModelSpec:
    """A served model's contract: what `config.pbtxt` and the manifest describe."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def model_specs(model: Teran, extractor: GridRegionExtractor | None = None) -> dict[str, ModelSpec]:
    """The contracts of the models `export_onnx` writes for `model` (and `extractor`)."""
    dim, feat = model.cfg.embed_dim, model.cfg.vision.feat_dim
    specs = {
        TEXT_MODEL: ModelSpec(
            TEXT_MODEL,
            (TensorSpec(TOKEN_IDS, "int64", (-1,)), TensorSpec(LENGTHS, "int64", ())),
            (TensorSpec(WORD_EMBEDDINGS, "float32", (-1, dim)),),
        ),
        IMAGE_MODEL: ModelSpec(
            IMAGE_MODEL,
            (
                TensorSpec(FEATURES, "float32", (-1, feat)),
                TensorSpec(BOXES, "float32", (-1, 4)),
                TensorSpec(N_REGIONS, "int64", ()),
            ),
            (TensorSpec(REGION_EMBEDDINGS, "float32", (-1, dim)),),
        ),
    }
    if extractor is not None:
        side, cells = extractor.cfg.image_size, extractor.grid**2
        specs[PIXELS_MODEL] = ModelSpec(
            PIXELS_MODEL,
            (TensorSpec(PIXELS, "float32", (3, side, side)),),
            (
                TensorSpec(REGION_EMBEDDINGS, "float32", (cells + 1, dim)),
                TensorSpec(REGION_BOXES, "float32", (cells, 4)),
            ),
        )
    return specs


class TextTower(nn.Module):
    """TOKEN_IDS [B, T], LENGTHS [B] -> WORD_EMBEDDINGS [B, T, D], as `Teran.encode_text`."""

    def __init__(self, model: Teran) -> None:
        super().__init__()
        self.model = model

    def forward(self, token_ids: Tensor, lengths: Tensor) -> Tensor:
        return self.model.encode_text(token_ids, lengths).tokens


class ImageTower(nn.Module):
    """FEATURES, BOXES, N_REGIONS -> REGION_EMBEDDINGS [B, R + 1, D], as `Teran.encode_image`."""

    def __init__(self, model: Teran) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor, boxes: Tensor, n_regions: Tensor) -> Tensor:
        return self.model.encode_image(features, boxes, n_regions).slots


class PixelsTower(nn.Module):
    """PIXELS [B, 3, S, S] -> (REGION_EMBEDDINGS [B, G*G + 1, D], REGION_BOXES [B, G*G, 4]).

    One model from pixels to vectors, so a GPU server needs no separate extractor service.
    """

    def __init__(self, model: Teran, extractor: GridRegionExtractor) -> None:
        super().__init__()
        if extractor.feat_dim != model.cfg.vision.feat_dim:
            raise ValueError(
                f"extractor gives {extractor.feat_dim}-d features but the model reads "
                f"vision.feat_dim={model.cfg.vision.feat_dim}"
            )
        self.model = model
        self.extractor = extractor
        self.n_cells = extractor.grid**2
        self.cells: Tensor
        self.register_buffer("cells", extractor.boxes(), persistent=False)

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        features = self.extractor(pixels)
        batch = features.shape[0]
        boxes = self.cells.unsqueeze(0).expand(batch, self.n_cells, 4)
        n_regions = torch.full((batch,), self.n_cells, dtype=torch.long, device=features.device)
        return self.model.encode_image(features, boxes, n_regions).slots, boxes


def _example_inputs(
    model: Teran, extractor: GridRegionExtractor | None
) -> dict[str, tuple[Tensor, ...]]:
    """Shapes chosen distinct and > 1: torch.export specialises size-1 axes and equal sizes."""
    gen = torch.Generator().manual_seed(0)
    batch, tokens, regions = 2, 7, 5
    out: dict[str, tuple[Tensor, ...]] = {
        TEXT_MODEL: (
            torch.randint(1000, 2000, (batch, tokens), generator=gen),
            torch.tensor([tokens, 4]),
        ),
        IMAGE_MODEL: (
            torch.randn(batch, regions, model.cfg.vision.feat_dim, generator=gen),
            torch.rand(batch, regions, 4, generator=gen),
            torch.tensor([regions, 3]),
        ),
    }
    if extractor is not None:
        side = extractor.cfg.image_size
        out[PIXELS_MODEL] = (torch.rand(batch, 3, side, side, generator=gen),)
    return out


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """The exporter prints progress and warns about torchvision ops this model never uses."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(
    model: Teran,
    extractor: GridRegionExtractor | None,
    out_dir: str | Path,
    opset: int = OPSET,
    only: Collection[str] | None = None,
) -> dict[str, Path]:
    """Write `<out_dir>/<model name>/model.onnx` per encoder; each passes onnx.checker.

    One folder per model: a weights file too big for one protobuf sits beside it as
    `model.onnx.data`, and the folder moves into a Triton repository as it is. The pixels model is
    written only with an `extractor`; `only` limits the export to those model names.
    Returns {model name: path of model.onnx}.
    """
    if opset < 17:
        raise ValueError(f"opset {opset} < 17: LayerNormalization needs opset 17")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    positions = int(getattr(model.textual.backbone.config, "max_position_embeddings", 512))
    batch, regions = torch.export.Dim("batch"), torch.export.Dim("regions")
    tokens = torch.export.Dim("tokens", max=positions)
    towers: dict[str, tuple[nn.Module, tuple[str, ...], tuple[str, ...], tuple[object, ...]]] = {
        TEXT_MODEL: (
            TextTower(model),
            (TOKEN_IDS, LENGTHS),
            (WORD_EMBEDDINGS,),
            ({0: batch, 1: tokens}, {0: batch}),
        ),
        IMAGE_MODEL: (
            ImageTower(model),
            (FEATURES, BOXES, N_REGIONS),
            (REGION_EMBEDDINGS,),
            ({0: batch, 1: regions}, {0: batch, 1: regions}, {0: batch}),
        ),
    }
    if extractor is not None:
        extractor.eval()
        towers[PIXELS_MODEL] = (
            PixelsTower(model, extractor),
            (PIXELS,),
            (REGION_EMBEDDINGS, REGION_BOXES),
            ({0: batch},),
        )
    unknown = set(only or ()) - set(towers)
    if unknown:
        raise ValueError(f"cannot export {sorted(unknown)}: known models are {sorted(towers)}")
    examples = _example_inputs(model, extractor)
    paths: dict[str, Path] = {}
    for name, (tower, inputs, outputs, dynamic) in towers.items():
        if only is not None and name not in only:
            continue
        tower.eval()
        path = out_dir / name / ONNX_FILE
        shutil.rmtree(path.parent, ignore_errors=True)  # no stale external data from a rerun
        path.parent.mkdir()
        size = sum(p.numel() * p.element_size() for p in tower.parameters())
        with _quiet_export(), torch.no_grad():
            torch.onnx.export(
                tower,
                examples[name],
                str(path),
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_shapes=dynamic,
                opset_version=opset,
                dynamo=True,
                external_data=size > _SINGLE_FILE_LIMIT,
            )
        onnx.checker.check_model(str(path), full_check=True)
        paths[name] = path
    return paths


# --- parity -------------------------------------------------------------------------------


def _run_onnx(path: Path, feeds: dict[str, Tensor]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, {k: v.numpy() for k, v in feeds.items()})]


def _slots_diff(onnx_slots: np.ndarray, torch_slots: Tensor) -> float:
    """encode_image trims to the longest image in the batch; the ONNX model keeps R + 1 slots,
    which past each image's length must be 0."""
    width = torch_slots.shape[1]
    diff = float(np.abs(onnx_slots[:, :width] - torch_slots.numpy()).max())
    return max(diff, float(np.abs(onnx_slots[:, width:]).max(initial=0.0)))


@torch.no_grad()
def parity(
    model: Teran,
    files: dict[str, Path],
    tokenizer: SentenceTokenizer | None = None,
    extractor: GridRegionExtractor | None = None,
    sentences: Sequence[str] = DEFAULT_SENTENCES,
    batch_sizes: Sequence[int] = (1, 3),
    seed: int = 0,
) -> dict[str, float]:
    """Max |ONNX - PyTorch| per exported model, on inputs of several batch sizes and lengths.

    Text runs `sentences` through the tokenizer (cycled to each batch size); images use region
    counts below R and an R other than the export's; pixels need the extractor.
    """
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    report: dict[str, float] = {}
    for batch in batch_sizes:
        if TEXT_MODEL in files and tokenizer is not None:
            tokens = tokenizer([sentences[i % len(sentences)] for i in range(batch)])
            (out,) = _run_onnx(files[TEXT_MODEL], {TOKEN_IDS: tokens.ids, LENGTHS: tokens.lengths})
            ref = model.encode_text(tokens.ids, tokens.lengths).tokens
            diff = float(np.abs(out - ref.numpy()).max())
            report[TEXT_MODEL] = max(report.get(TEXT_MODEL, 0.0), diff)
        if IMAGE_MODEL in files:
            regions = 9 + 4 * batch
            features = torch.randn(batch, regions, model.cfg.vision.feat_dim, generator=gen).relu()
            xy = torch.rand(batch, regions, 2, generator=gen) * 0.7
            boxes = torch.cat([xy, xy + 0.3 * torch.rand(batch, regions, 2, generator=gen)], -1)
            counts = torch.randint(1, regions + 1, (batch,), generator=gen)
            feeds = {FEATURES: features, BOXES: boxes, N_REGIONS: counts}
            (out,) = _run_onnx(files[IMAGE_MODEL], feeds)
            diff = _slots_diff(out, model.encode_image(features, boxes, counts).slots)
            report[IMAGE_MODEL] = max(report.get(IMAGE_MODEL, 0.0), diff)
        if PIXELS_MODEL in files and extractor is not None:
            side = extractor.cfg.image_size
            pixels = torch.rand(batch, 3, side, side, generator=gen)
            slots, boxes_out = _run_onnx(files[PIXELS_MODEL], {PIXELS: pixels})
            features = extractor(pixels)
            cells = extractor.boxes().expand(batch, -1, -1)
            counts = torch.full((batch,), cells.shape[1], dtype=torch.long)
            diff = _slots_diff(slots, model.encode_image(features, cells, counts).slots)
            diff = max(diff, float(np.abs(boxes_out - cells.numpy()).max()))
            report[PIXELS_MODEL] = max(report.get(PIXELS_MODEL, 0.0), diff)
    return report


def check_parity(
    model: Teran,
    files: dict[str, Path],
    tokenizer: SentenceTokenizer | None = None,
    extractor: GridRegionExtractor | None = None,
    atol: float = TOLERANCE,
) -> dict[str, float]:
    """`parity`, raising ValueError when a model differs from PyTorch by more than `atol`."""
    report = parity(model, files, tokenizer, extractor)
    bad = {name: diff for name, diff in report.items() if not diff <= atol}
    if bad:
        raise ValueError(f"ONNX differs from PyTorch by more than {atol}: {bad}")
    return report
