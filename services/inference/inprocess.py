"""Inference in the service's own process: the embedded mode's backend (no Triton)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from services.inference.base import InferenceUnavailable, ModelInfo
from teran.checkpoint import load_checkpoint, model_version
from teran.regions import GridRegionExtractor


class InProcessBackend:
    """Runs the checkpoint's own encoders (the modules the Triton models were exported from)."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu") -> None:
        self.model, self.tokenizer = load_checkpoint(checkpoint)
        self.device = torch.device(device)
        self.model.to(self.device)
        cfg = self.model.cfg
        self.extractor = (
            GridRegionExtractor(cfg.vision.extractor).to(self.device)
            if cfg.vision.extractor is not None
            else None
        )
        self.info = ModelInfo(
            version=model_version(checkpoint),
            embed_dim=cfg.embed_dim,
            feat_dim=cfg.vision.feat_dim,
            image_size=cfg.vision.extractor.image_size if cfg.vision.extractor else None,
            max_tokens=cfg.text.max_tokens,
        )
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise InferenceUnavailable("in-process model is closed")

    @torch.no_grad()
    def encode_text(self, token_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        self._check()
        out = self.model.encode_text(
            torch.from_numpy(token_ids).to(self.device), torch.from_numpy(lengths).to(self.device)
        )
        return out.tokens.cpu().numpy()

    @torch.no_grad()
    def encode_regions(
        self, features: np.ndarray, boxes: np.ndarray, n_regions: np.ndarray
    ) -> np.ndarray:
        self._check()
        out = self.model.encode_image(
            torch.from_numpy(features).to(self.device),
            torch.from_numpy(boxes).to(self.device),
            torch.from_numpy(n_regions).to(self.device),
        )
        slots = out.slots.cpu().numpy()
        width = features.shape[1] + 1  # the contract's width, whatever the counts
        if slots.shape[1] < width:
            slots = np.pad(slots, ((0, 0), (0, width - slots.shape[1]), (0, 0)))
        return slots

    @torch.no_grad()
    def encode_pixels(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check()
        if self.extractor is None:
            raise ValueError("this model has no built-in region extractor")
        features = self.extractor(torch.from_numpy(pixels).to(self.device))
        batch, cells = features.shape[:2]
        boxes = self.extractor.boxes().to(self.device).expand(batch, -1, -1)
        counts = torch.full((batch,), cells, device=self.device)
        slots = self.model.encode_image(features, boxes, counts).slots
        return slots.cpu().numpy(), boxes.cpu().numpy()

    def healthy(self) -> bool:
        return not self._closed

    def close(self) -> None:
        self._closed = True
