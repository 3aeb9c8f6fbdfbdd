"""TERAN (Messina et al., ACM TOMM 2021) as plain PyTorch modules.

Two pipelines that meet only at the alignment: images are encoded without text and sentences
without images, which is what lets a service encode a collection offline and queries online.

- visual: region features + 5-d box info -> "concat-and-process" -> transformer at feature width
  -> projection -> common-space transformer -> every slot L2-normalised. Slot 0 is a CLS slot
  whose feature and box are zeros.
- textual: BERT-family backbone truncated to K layers -> projection -> common-space transformer
  -> every token L2-normalised.
The common-space transformers are separate or shared (`shared_transformer`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel

from teran.alignment import GLOBAL, AlignmentMode, alignment_scores, global_scores
from teran.config import TeranCfg, VisionCfg
from teran.embeddings import ImageEmbedding, TextEmbedding, length_mask

BOX_INFO = 5
"""x1, y1, x2, y2 (fractions of the image size) and the box area."""


def transformer_stack(
    width: int, layers: int, heads: int, ff_dim: int, dropout: float
) -> nn.Module:
    """Post-norm ReLU encoder layers, as the reference builds every non-BERT stack."""
    layer = nn.TransformerEncoderLayer(
        d_model=width,
        nhead=heads,
        dim_feedforward=ff_dim,
        dropout=dropout,
        activation="relu",
        batch_first=True,
    )
    return nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)


class ConcatAndProcess(nn.Module):
    """Append the box info to each region feature, then Linear-ReLU-Linear back to feat width."""

    def __init__(self, feat_dim: int) -> None:
        super().__init__()
        self.map = nn.Sequential(
            nn.Linear(feat_dim + BOX_INFO, feat_dim), nn.ReLU(), nn.Linear(feat_dim, feat_dim)
        )

    def forward(self, features: Tensor, boxes: Tensor) -> Tensor:
        area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
        return self.map(torch.cat([features, boxes, area.unsqueeze(-1)], dim=-1))


class VisualPipeline(nn.Module):
    """Regions to feature-width contextual vectors, then projected to the common space."""

    def __init__(self, cfg: VisionCfg, embed_dim: int) -> None:
        super().__init__()
        self.spatial = ConcatAndProcess(cfg.feat_dim)
        self.transformer = transformer_stack(
            cfg.feat_dim, cfg.layers, cfg.heads, cfg.ff_dim, cfg.dropout
        )
        self.proj = nn.Linear(cfg.feat_dim, embed_dim)

    def forward(self, slots: Tensor, boxes: Tensor, padding: Tensor) -> Tensor:
        x = self.spatial(slots, boxes)
        x = self.transformer(x, src_key_padding_mask=padding)
        return self.proj(x)


class TextualPipeline(nn.Module):
    """Word pieces to the backbone's last kept layer, projected to the common space."""

    def __init__(self, backbone: PreTrainedModel, embed_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.proj = nn.Linear(int(backbone.config.hidden_size), embed_dim)

    def backbone_features(self, token_ids: Tensor, attention: Tensor) -> Tensor:
        """[B, T, H] output of the last kept backbone layer."""
        out = self.backbone(
            input_ids=token_ids,
            attention_mask=attention.long(),
            token_type_ids=torch.zeros_like(token_ids),
        )
        return out.last_hidden_state

    def forward(self, token_ids: Tensor, attention: Tensor) -> Tensor:
        return self.proj(self.backbone_features(token_ids, attention))


class Teran(nn.Module):
    """The whole model; `encode_image` and `encode_text` run independently of each other."""

    def __init__(self, cfg: TeranCfg, backbone: PreTrainedModel) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.visual = VisualPipeline(cfg.vision, cfg.embed_dim)
        self.textual = TextualPipeline(backbone, cfg.embed_dim)
        self.text_head = transformer_stack(
            cfg.embed_dim, cfg.layers, cfg.heads, cfg.ff_dim, cfg.dropout
        )
        self.image_head: nn.Module | None = (
            None
            if cfg.shared_transformer
            else transformer_stack(cfg.embed_dim, cfg.layers, cfg.heads, cfg.ff_dim, cfg.dropout)
        )

    @property
    def alignment(self) -> AlignmentMode:
        return AlignmentMode(self.cfg.alignment)

    def encode_image(self, features: Tensor, boxes: Tensor, n_regions: Tensor) -> ImageEmbedding:
        """Region features [B, R, F], boxes [B, R, 4] (x1, y1, x2, y2 in [0, 1]), counts [B].

        While exporting (torch.export) the value checks are skipped and the output keeps the
        input's width R + 1, so the traced graph has no value-dependent Python.
        """
        exporting = torch.compiler.is_exporting()
        if not exporting:
            check_image_inputs(features, boxes, n_regions, self.cfg.vision.feat_dim)
        batch, regions, feat_dim = features.shape
        lengths = n_regions.to(device=features.device, dtype=torch.long) + 1
        width = regions + 1 if exporting else (int(lengths.max()) if batch else 1)
        valid = length_mask(lengths, width)
        keep = valid.unsqueeze(-1)
        # where, not multiply: NaN or garbage in padding must not reach the attention
        slots = torch.where(
            keep,
            torch.cat([features.new_zeros(batch, 1, feat_dim), features[:, : width - 1]], 1),
            0,
        )
        slot_boxes = torch.where(
            keep, torch.cat([boxes.new_zeros(batch, 1, 4), boxes[:, : width - 1]], 1), 0
        )
        x = self.visual(slots, slot_boxes, ~valid)
        head = self.image_head if self.image_head is not None else self.text_head
        x = head(x, src_key_padding_mask=~valid)
        return ImageEmbedding(slots=_normalise(x, valid), lengths=lengths)

    def encode_text(self, token_ids: Tensor, lengths: Tensor) -> TextEmbedding:
        """Token ids [B, T] ([CLS] ... [SEP], padded) and token counts [B]."""
        if token_ids.dim() != 2:
            raise ValueError(
                f"token_ids must be [batch, tokens], got shape {tuple(token_ids.shape)}"
            )
        lengths = lengths.to(device=token_ids.device, dtype=torch.long)
        if (
            not torch.compiler.is_exporting()
            and lengths.numel()
            and (int(lengths.min()) < 2 or int(lengths.max()) > token_ids.shape[1])
        ):
            raise ValueError(
                "lengths must lie in [2, token_ids.shape[1]] ([CLS] and [SEP] included)"
            )
        valid = length_mask(lengths, token_ids.shape[1])
        return self.encode_text_features(self.textual.backbone_features(token_ids, valid), lengths)

    def encode_text_features(self, hidden: Tensor, lengths: Tensor) -> TextEmbedding:
        """From backbone outputs [B, T, H]: lets training cache a frozen backbone's outputs."""
        lengths = lengths.to(device=hidden.device, dtype=torch.long)
        valid = length_mask(lengths, hidden.shape[1])
        x = self.textual.proj(hidden)
        x = self.text_head(x, src_key_padding_mask=~valid)
        return TextEmbedding(tokens=_normalise(x, valid), lengths=lengths)

    def score(
        self,
        images: ImageEmbedding,
        texts: TextEmbedding,
        mode: AlignmentMode | str | None = None,
    ) -> Tensor:
        """[images, sentences] scores in this model's alignment mode, or `mode`: an
        `AlignmentMode` or "global" (cosine of the aggregated vectors)."""
        mode = mode or self.alignment
        if mode == GLOBAL:
            return global_scores(images.global_vector, texts.global_vector)
        return alignment_scores(
            images.regions, images.region_mask, texts.words, texts.word_mask, mode
        )


def _normalise(x: Tensor, valid: Tensor) -> Tensor:
    """L2-normalise every position and write 0 past the valid length."""
    return F.normalize(x, p=2, dim=-1) * valid.unsqueeze(-1)


def check_image_inputs(features: Tensor, boxes: Tensor, n_regions: Tensor, feat_dim: int) -> None:
    """Raise ValueError naming the input that the visual pipeline cannot take."""
    if features.dim() != 3 or features.shape[2] != feat_dim:
        raise ValueError(
            f"features must be [batch, regions, {feat_dim}], got shape {tuple(features.shape)}"
        )
    if boxes.shape != (*features.shape[:2], 4):
        raise ValueError(
            f"boxes must be [batch, regions, 4] matching features, got shape {tuple(boxes.shape)}"
        )
    if n_regions.shape != features.shape[:1]:
        raise ValueError(f"n_regions must be [batch], got shape {tuple(n_regions.shape)}")
    if n_regions.numel() and (int(n_regions.min()) < 1 or int(n_regions.max()) > features.shape[1]):
        raise ValueError(f"n_regions must lie in [1, {features.shape[1]}]")
