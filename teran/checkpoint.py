"""Checkpoints: this project's self-contained format, and import of the reference's `.pth.tar`.

This project's checkpoint is a folder: `teran_config.json` (model config, backbone config, free
metadata), `model.safetensors` (weights, no pickle) and `tokenizer/`. It needs nothing else to
load: no backbone folder, no hub.

Reference checkpoints (mesnico/TERAN) are a pickled dict with `model` (state_dict), `config`
(its YAML as a dict) and `opt` (an argparse.Namespace). Their backbone config and vocabulary are
not inside, so the user names the backbone folder (or it is found relative to the checkpoint).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from teran.backbone import (
    BUNDLED_BACKBONES,
    backbone_config,
    backbone_from_config,
    load_backbone,
    resolve_backbone,
)
from teran.config import TeranCfg, TextCfg, TrainRecipe, VisionCfg
from teran.contract import (  # noqa: F401 - re-exported: part of the checkpoint API
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    CONFIG_FILE,
    WEIGHTS_FILE,
    model_version,
    read_header,
)
from teran.model import Teran
from teran.tokenizer import (  # noqa: F401 - load_tokenizer re-exported
    TOKENIZER_DIR,
    SentenceTokenizer,
    load_tokenizer,
)

_BACKBONE_PREFIX = "textual.backbone."
FORMAT = CHECKPOINT_FORMAT
FORMAT_VERSION = CHECKPOINT_FORMAT_VERSION


def save_checkpoint(
    model: Teran,
    tokenizer: SentenceTokenizer,
    folder: str | Path,
    meta: dict[str, Any] | None = None,
    bundled_backbone: bool = False,
) -> Path:
    """Write `model` and `tokenizer` as a checkpoint folder.

    With `bundled_backbone`, a model whose backbone is an unmodified bundled one (e.g. trained
    with it frozen) stores only its own weights; the backbone and tokenizer are read from the
    package at load time. That keeps a small model's checkpoint at a few megabytes.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    backbone_source = None
    if bundled_backbone:
        backbone_source = model.cfg.text.backbone
        if backbone_source not in BUNDLED_BACKBONES:
            raise ValueError(f"text.backbone {backbone_source!r} is not a bundled backbone")
        state = {k: v for k, v in state.items() if not k.startswith(_BACKBONE_PREFIX)}
    else:
        tokenizer.save(folder / TOKENIZER_DIR)
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": FORMAT})
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": model.cfg.to_dict(),
        "backbone": model.textual.backbone.config.to_dict(),
        "bundled_backbone": backbone_source,
        "meta": meta or {},
    }
    (folder / CONFIG_FILE).write_text(json.dumps(header, indent=2, default=str) + "\n")
    return folder


def load_checkpoint(folder: str | Path) -> tuple[Teran, SentenceTokenizer]:
    """Load a checkpoint folder written by `save_checkpoint`; returns the model in eval mode."""
    folder = Path(folder)
    header = read_header(folder)
    cfg = TeranCfg.from_dict(header["model"])
    weights = load_file(str(folder / WEIGHTS_FILE))
    bundled = header.get("bundled_backbone")
    if bundled:
        backbone_dir = resolve_backbone(bundled)
        model = Teran(cfg, load_backbone(backbone_dir, cfg.text.layers, pretrained=True))
        weights.update(
            {k: v for k, v in model.state_dict().items() if k.startswith(_BACKBONE_PREFIX)}
        )
        tokenizer_dir = backbone_dir
    else:
        model = Teran(cfg, backbone_from_config(header["backbone"]))
        tokenizer_dir = folder / TOKENIZER_DIR
    model.load_state_dict(weights, strict=True)
    return model.eval(), SentenceTokenizer(tokenizer_dir, cfg.text.max_tokens)


# --- reference checkpoints -----------------------------------------------------------------

_REF_PREFIX = "img_txt_enc."
_REF_RENAMES = (
    ("txt_enc.bert_model.", "textual.backbone."),
    ("cap_proj.", "textual.proj."),
    ("img_enc.pos_encoding_image.", "visual.spatial."),
    ("img_enc.transformer_encoder.", "visual.transformer."),
    ("img_proj.", "visual.proj."),
    ("transformer_encoder_1.", "text_head."),
    ("transformer_encoder_2.", "image_head."),
)
_REF_UNUSED = (
    "txt_enc.word_embeddings.",  # the backbone's own input embeddings, stored twice
    "txt_enc.map.",  # pooled-sentence head; outputs TERAN does not use
    "img_enc.fc.",  # pooled-image head; idem
    "txt_enc.bert_model.pooler.",
    "txt_enc.bert_model.embeddings.position_ids",
)


@dataclass
class ImportReport:
    source: Path
    backbone: Path
    mapped: int = 0
    ignored: list[str] = field(default_factory=list)


def config_from_reference(ref: dict[str, Any], backbone: str) -> TeranCfg:
    """Translate the reference's YAML config dict; settings this model lacks are errors."""
    text, image, model, train = (
        ref["text-model"],
        ref["image-model"],
        ref["model"],
        ref.get("training", {}),
    )
    unsupported = {
        "model.text-aggregation": (model.get("text-aggregation"), "first"),
        "model.image-aggregation": (model.get("image-aggregation"), "first"),
        "text-model.layers": (text.get("layers", 0), 0),
        "text-model.pre-extracted": (text.get("pre-extracted", False), False),
        "training.loss-type": (train.get("loss-type", "alignment"), "alignment"),
        "training.measure": (train.get("measure", "dot"), "dot"),
    }
    for key, (value, supported) in unsupported.items():
        if value != supported:
            raise ValueError(
                f"reference config {key}={value!r} is not supported (only {supported!r})"
            )
    cfg = TeranCfg(
        embed_dim=int(model["embed-size"]),
        layers=int(model["layers"]),
        dropout=float(model.get("dropout", 0.1)),
        shared_transformer=bool(model.get("shared-transformer", False)),
        alignment=str(train.get("alignment-mode", "MrSw")),
        text=TextCfg(backbone=backbone, layers=int(text["extraction-hidden-layer"])),
        vision=VisionCfg(
            feat_dim=int(image["feat-dim"]),
            layers=int(image["transformer-layers"]),
            dropout=float(image.get("dropout", 0.1)),
            spatial=str(image.get("pos-encoding", "concat-and-process")),
        ),
        train=TrainRecipe(
            lr=float(train.get("lr", 1e-5)),
            batch_size=int(train.get("bs", 40)),
            grad_clip=float(train.get("grad-clip", 2.0)),
            margin=float(train.get("margin", 0.2)),
            max_violation=bool(train.get("max-violation", True)),
            lr_step_epochs=int(train.get("step-size", 20)),
            lr_gamma=float(train.get("gamma", 0.1)),
            warmup=train.get("warmup"),
            warmup_steps=int(train.get("warmup-period", 1000)),
        ),
    )
    cfg.validate()
    return cfg


def _read_reference(path: Path, trusted: bool) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"reference checkpoint {path} does not exist")
    try:
        if trusted:
            return dict(torch.load(path, map_location="cpu", weights_only=False))
        with torch.serialization.safe_globals([argparse.Namespace]):
            return dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # torch raises several unpickling error types
        hint = "" if trusted else " (if you trust its origin, import it with trusted=True)"
        raise ValueError(f"cannot read reference checkpoint {path}: {err}{hint}") from err


def map_reference_state(
    state: dict[str, Tensor],
) -> tuple[dict[str, Tensor], list[str]]:
    """Reference state_dict keys to this model's keys; returns (mapped, ignored keys)."""
    mapped: dict[str, Tensor] = {}
    ignored: list[str] = []
    for key, value in state.items():
        short = key.removeprefix("module.").removeprefix(_REF_PREFIX)
        if short.startswith(_REF_UNUSED):
            ignored.append(key)
            continue
        for old, new in _REF_RENAMES:
            if short.startswith(old):
                mapped[new + short[len(old) :]] = value
                break
        else:
            raise ValueError(f"reference checkpoint key {key!r} has no counterpart in this model")
    return mapped, ignored


def import_reference_checkpoint(
    path: str | Path, backbone: str | Path | None = None, trusted: bool = False
) -> tuple[Teran, SentenceTokenizer, ImportReport]:
    """Load a reference `.pth.tar` into this project's model.

    Args:
        path: the reference checkpoint.
        backbone: folder holding the backbone's config and tokenizer (e.g. the user's
            bert-base-uncased). Default: the config's `text-model.pretrain`, resolved against
            the checkpoint's folder.
        trusted: allow arbitrary pickles (only for files of known origin).
    """
    path = Path(path)
    raw = _read_reference(path, trusted)
    if "model" not in raw or "config" not in raw:
        raise ValueError(f"{path} lacks the 'model' and 'config' entries of a TERAN checkpoint")
    ref_cfg = raw["config"]
    folder = resolve_backbone(
        backbone if backbone is not None else ref_cfg["text-model"]["pretrain"],
        relative_to=path.parent,
    )
    cfg = config_from_reference(ref_cfg, str(folder))
    bb_config = backbone_config(folder, cfg.text.layers)
    word_dim = int(ref_cfg["text-model"].get("word-dim", bb_config.hidden_size))
    if word_dim != int(bb_config.hidden_size):
        raise ValueError(
            f"reference text-model.word-dim={word_dim} but backbone {folder} has hidden size "
            f"{bb_config.hidden_size}"
        )
    model = Teran(cfg, backbone_from_config(bb_config.to_dict()))
    mapped, ignored = map_reference_state(raw["model"])
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    extra = sorted(set(mapped) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{path} does not fit the model its config describes: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {extra[:5]}"
        )
    for key, value in mapped.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{key}: checkpoint shape {tuple(value.shape)} != model shape "
                f"{tuple(expected[key].shape)}"
            )
    model.load_state_dict({k: v.float() for k, v in mapped.items()}, strict=True)
    report = ImportReport(source=path, backbone=folder, mapped=len(mapped), ignored=ignored)
    return model.eval(), SentenceTokenizer(folder, cfg.text.max_tokens), report
