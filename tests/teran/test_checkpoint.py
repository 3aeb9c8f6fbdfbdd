"""Reference checkpoint import and this project's own checkpoint format."""

from __future__ import annotations

import fractions
from pathlib import Path
from typing import Any

import pytest
import torch

from teran.checkpoint import import_reference_checkpoint, load_checkpoint, save_checkpoint
from teran.fixtures import Fixture, encode_fixture
from trainer import import_checkpoint


@pytest.mark.parametrize("name", ["teran-tiny", "teran-tiny-shared"])
def test_import_save_load_round_trip(reference_dir: Path, tmp_path: Path, name: str) -> None:
    fixture = Fixture.load(reference_dir / name)
    model, tokenizer, report = import_reference_checkpoint(fixture.folder / "checkpoint.pth.tar")
    assert report.backbone == (fixture.folder / "bert").resolve()
    assert report.mapped == len(model.state_dict())
    save_checkpoint(model, tokenizer, tmp_path / "ck", meta={"source": name})
    loaded, loaded_tok = load_checkpoint(tmp_path / "ck")
    assert loaded.cfg == model.cfg
    assert (loaded.image_head is None) == (name == "teran-tiny-shared")
    a, b = encode_fixture(model, tokenizer, fixture), encode_fixture(loaded, loaded_tok, fixture)
    assert torch.equal(a.images.slots, b.images.slots)
    assert torch.equal(a.texts.tokens, b.texts.tokens)
    with torch.no_grad():
        assert torch.equal(model.score(a.images, a.texts), loaded.score(b.images, b.texts))


def test_import_command_writes_a_loadable_checkpoint(reference_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    ref = reference_dir / "teran-tiny" / "checkpoint.pth.tar"
    result = CliRunner().invoke(import_checkpoint.app, [str(ref), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "imported 117 tensors" in result.output
    model, _ = load_checkpoint(tmp_path / "out")
    assert model.cfg.embed_dim == 64


def test_backbone_of_another_width_is_rejected(reference_dir: Path) -> None:
    ref = reference_dir / "teran-tiny" / "checkpoint.pth.tar"
    with pytest.raises(ValueError, match="word-dim=64"):
        import_reference_checkpoint(ref, backbone="all-minilm-l6-v2")


def test_missing_backbone_folder_is_named(reference_dir: Path, tmp_path: Path) -> None:
    ref = reference_dir / "teran-tiny" / "checkpoint.pth.tar"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        import_reference_checkpoint(ref, backbone=tmp_path / "nowhere")


def _rewrite(reference_dir: Path, tmp_path: Path, edit) -> Path:
    raw = torch.load(
        reference_dir / "teran-tiny" / "checkpoint.pth.tar", map_location="cpu", weights_only=False
    )
    edit(raw)
    out = tmp_path / "edited.pth.tar"
    torch.save(raw, out)
    return out


def test_truncated_state_dict_is_rejected(reference_dir: Path, tmp_path: Path) -> None:
    def drop(raw):
        del raw["model"]["img_txt_enc.img_proj.weight"]

    path = _rewrite(reference_dir, tmp_path, drop)
    with pytest.raises(ValueError, match=r"missing \['visual.proj.weight'\]"):
        import_reference_checkpoint(path, backbone=reference_dir / "teran-tiny" / "bert")


def test_unsupported_reference_setting_is_rejected(reference_dir: Path, tmp_path: Path) -> None:
    def gated(raw):
        raw["config"]["model"]["image-aggregation"] = "gated"

    path = _rewrite(reference_dir, tmp_path, gated)
    with pytest.raises(ValueError, match="image-aggregation='gated'"):
        import_reference_checkpoint(path, backbone=reference_dir / "teran-tiny" / "bert")


def test_arbitrary_pickles_are_refused_unless_trusted(reference_dir: Path, tmp_path: Path) -> None:
    def smuggle(raw):
        raw["extra"] = fractions.Fraction(1, 3)

    path = _rewrite(reference_dir, tmp_path, smuggle)
    bert = reference_dir / "teran-tiny" / "bert"
    with pytest.raises(ValueError, match="trusted=True"):
        import_reference_checkpoint(path, backbone=bert)
    model, _, _ = import_reference_checkpoint(path, backbone=bert, trusted=True)
    assert model.cfg.embed_dim == 64


def test_not_a_checkpoint_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"teran_config\.json"):
        load_checkpoint(tmp_path)


def test_bundled_backbone_checkpoint_is_small_and_equal(
    tiny_minilm: tuple[Any, Any], tmp_path: Path
) -> None:
    model, tokenizer = tiny_minilm
    save_checkpoint(model, tokenizer, tmp_path / "full")
    save_checkpoint(model, tokenizer, tmp_path / "small", bundled_backbone=True)
    full = (tmp_path / "full" / "model.safetensors").stat().st_size
    small = (tmp_path / "small" / "model.safetensors").stat().st_size
    assert small < full / 3
    assert not (tmp_path / "small" / "tokenizer").exists()
    loaded, loaded_tok = load_checkpoint(tmp_path / "small")
    batch = loaded_tok(["a red circle left of a blue square."])
    with torch.no_grad():
        a = model.encode_text(batch.ids, batch.lengths).tokens
        b = loaded.encode_text(batch.ids, batch.lengths).tokens
    assert torch.equal(a, b)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
