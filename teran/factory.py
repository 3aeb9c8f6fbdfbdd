"""Named configurations and the one entry point that builds a model from a name or a checkpoint."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from teran.backbone import load_backbone, resolve_backbone
from teran.config import TeranCfg
from teran.model import Teran
from teran.tokenizer import SentenceTokenizer

_CONFIG_DIR = Path(__file__).parent / "model_configs"
_MODEL_CONFIGS: dict[str, dict[str, Any]] = {}


def _scan_configs() -> None:
    for path in sorted(_CONFIG_DIR.glob("*.json")):
        _MODEL_CONFIGS[path.stem] = json.loads(path.read_text())


def list_models() -> list[str]:
    """Names of the registered configurations."""
    return sorted(_MODEL_CONFIGS)


def add_model_config(path: str | Path) -> None:
    """Register a JSON config file (or every one in a folder) under its file name."""
    path = Path(path)
    for file in sorted(path.glob("*.json")) if path.is_dir() else [path]:
        data = json.loads(file.read_text())
        TeranCfg.from_dict(data)
        _MODEL_CONFIGS[file.stem] = data


def get_model_config(name: str) -> TeranCfg:
    """A fresh, validated copy of a named configuration, or of a JSON config file's contents."""
    if name not in _MODEL_CONFIGS and name.endswith(".json") and Path(name).is_file():
        return TeranCfg.from_dict(json.loads(Path(name).read_text()))
    if name not in _MODEL_CONFIGS:
        raise KeyError(f"unknown model config {name!r}; known: {', '.join(list_models())}")
    return TeranCfg.from_dict(copy.deepcopy(_MODEL_CONFIGS[name]))


def create_model(
    name_or_cfg: str | TeranCfg,
    backbone: str | Path | None = None,
    checkpoint: str | Path | None = None,
    pretrained_backbone: bool = True,
) -> tuple[Teran, SentenceTokenizer]:
    """Build a TERAN model and its tokenizer.

    Args:
        name_or_cfg: a registered name (`list_models()`) or a `TeranCfg`.
        backbone: folder of the text backbone, overriding `cfg.text.backbone`.
        checkpoint: a checkpoint folder in this project's format; its config and weights win.
        pretrained_backbone: load the backbone's weights (else random init, e.g. for tests).

    Returns:
        (model in eval mode, tokenizer).

    Example:
        >>> model, tokenizer = create_model("teran-minilm-tiny")
        >>> batch = tokenizer(["a dog on a red sofa."])
        >>> words = model.encode_text(batch.ids, batch.lengths)
    """
    if checkpoint is not None:
        from teran.checkpoint import load_checkpoint

        return load_checkpoint(checkpoint)
    cfg = get_model_config(name_or_cfg) if isinstance(name_or_cfg, str) else name_or_cfg
    if backbone is not None:
        cfg = copy.deepcopy(cfg)
        cfg.text.backbone = str(backbone)
    folder = resolve_backbone(cfg.text.backbone)
    model = Teran(cfg, load_backbone(folder, cfg.text.layers, pretrained=pretrained_backbone))
    return model.eval(), SentenceTokenizer(folder, cfg.text.max_tokens)


_scan_configs()
