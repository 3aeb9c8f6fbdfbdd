"""Typed configuration of a TERAN model: the contract between the registry, checkpoints and code."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SPATIAL_MODES = ("concat-and-process",)


class AlignmentMode(StrEnum):
    """How region-word similarities are pooled into a pair score (paper, Sec. 3.4)."""

    MrSw = "MrSw"
    """Sum over words of each word's best region."""
    MwSr = "MwSr"
    """Sum over regions of each region's best word."""
    symm = "symm"
    """MrSw + MwSr."""
    MrAVGw = "MrAVGw"
    """MrSw divided by the number of words."""


@dataclass
class TextCfg:
    """Textual pipeline: a BERT-family backbone truncated to its first `layers` layers."""

    backbone: str = "all-minilm-l6-v2"
    """A local folder with a BERT-family model (`save_pretrained` layout) or a bundled name."""
    layers: int = 6
    """Backbone layers kept; the last kept layer's output is the word feature (paper: 6 of 12)."""
    max_tokens: int = 128
    """Longest tokenised sentence accepted, [CLS] and [SEP] included."""


@dataclass(frozen=True)
class ExtractorCfg:
    """The built-in grid region extractor (`teran.regions`) a model was trained with."""

    variant: str = "efficientnet-lite0"
    """efficientnet-lite0 or efficientnet-lite2 (weights from their pip packages)."""
    image_size: int = 224
    """Square input side; the grid is image_size / 32 cells per side (7 at 224)."""
    stage: str = "blocks"
    """"blocks": the last MBConv stage (320-d for lite0, 352-d for lite2); "head": the 1x1
    conv head after it (1280-d)."""


@dataclass
class VisionCfg:
    """Visual pipeline: region features + boxes, "concat-and-process", transformer at feat width."""

    feat_dim: int = 2048
    """Width of one region feature (2048 for bottom-up-attention features)."""
    layers: int = 4
    """Transformer layers at feature width before the projection to the common space."""
    heads: int = 4
    ff_dim: int = 2048
    dropout: float = 0.1
    spatial: str = "concat-and-process"
    """How the 5-d box info (x1, y1, x2, y2, area) enters: one of `SPATIAL_MODES`."""
    extractor: ExtractorCfg | None = None
    """Built-in region extractor whose features this model reads; None for precomputed
    features (e.g. bottom-up attention)."""


@dataclass
class TrainRecipe:
    """The paper's optimisation settings for this configuration; the trainer's defaults."""

    lr: float = 1e-5
    batch_size: int = 40
    grad_clip: float = 2.0
    margin: float = 0.2
    max_violation: bool = True
    hardest_negatives_after: int = 0
    """Optimiser steps that sum the hinge over every in-batch negative before the loss moves
    to the hardest one (0: hardest from the first step, as the paper). Summing first lets a
    model whose scores all start equal leave that plateau in tens of steps instead of hundreds."""
    lr_schedule: str = "step"
    """"step": x`lr_gamma` every `lr_step_epochs` epochs (the paper's StepLR); "cosine":
    decay to 0 over the whole run (`epochs`)."""
    lr_step_epochs: int = 20
    lr_gamma: float = 0.1
    warmup: str | None = None
    warmup_steps: int = 1000
    epochs: int = 30
    freeze_backbone: bool = False
    """Keep the text backbone fixed and cache its outputs: CPU-sized training."""


@dataclass
class TeranCfg:
    """A whole TERAN model: both pipelines, the common-space encoders and the alignment."""

    embed_dim: int = 1024
    """Width of the common space where regions and words are compared."""
    layers: int = 2
    """Transformer layers in the common space, per side (or shared)."""
    heads: int = 4
    ff_dim: int = 2048
    dropout: float = 0.1
    shared_transformer: bool = False
    """One common-space transformer for both sides (the paper's sharedTE) instead of two."""
    alignment: str = AlignmentMode.MrSw.value
    text: TextCfg = field(default_factory=TextCfg)
    vision: VisionCfg = field(default_factory=VisionCfg)
    train: TrainRecipe = field(default_factory=TrainRecipe)

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot build a model."""
        AlignmentMode(self.alignment)
        if self.vision.spatial not in SPATIAL_MODES:
            raise ValueError(
                f"vision.spatial must be one of {SPATIAL_MODES}, got {self.vision.spatial!r}"
            )
        for name, value in (
            ("embed_dim", self.embed_dim),
            ("layers", self.layers),
            ("heads", self.heads),
            ("ff_dim", self.ff_dim),
            ("text.layers", self.text.layers),
            ("text.max_tokens", self.text.max_tokens),
            ("vision.feat_dim", self.vision.feat_dim),
            ("vision.layers", self.vision.layers),
            ("vision.heads", self.vision.heads),
            ("vision.ff_dim", self.vision.ff_dim),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.embed_dim % self.heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by heads {self.heads}")
        if self.vision.feat_dim % self.vision.heads:
            raise ValueError(
                f"vision.feat_dim {self.vision.feat_dim} is not divisible by vision.heads "
                f"{self.vision.heads}"
            )
        if self.text.max_tokens < 4:
            raise ValueError(
                "text.max_tokens must leave room for [CLS], a word, a full stop, [SEP]"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TeranCfg:
        """Build from a nested dict; unknown keys are errors so typos never pass silently."""
        data = dict(data)
        sections = {"text": TextCfg, "vision": VisionCfg, "train": TrainRecipe}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "vision" and value.get("extractor") is not None:
                value = {**value, "extractor": _strict(ExtractorCfg, value["extractor"], key)}
            if key in sections:
                kwargs[key] = _strict(sections[key], value, key)
            else:
                kwargs[key] = value
        cfg = _strict(cls, kwargs, "model")
        cfg.validate()
        return cfg


def _strict(kind: type[Any], values: dict[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown key(s) in {where} config: {', '.join(unknown)}")
    return kind(**values)
