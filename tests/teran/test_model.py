"""Model properties the platform rests on: separate pipelines, batch invariance, registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig

from teran import SentenceTokenizer, Teran, TeranCfg, create_model, get_model_config, list_models
from teran.alignment import alignment_scores
from teran.backbone import resolve_backbone
from teran.checkpoint import map_reference_state
from teran.data.pairs import PairBatch
from trainer.task import TeranTask

SENTENCES = [
    "A man riding a wave on top of a surfboard.",
    "two dogs",
    "A red double decker bus drives down a busy city street next to tall old buildings",
    "A cat sleeps on an open laptop keyboard.",
]


def _regions(n: int, max_regions: int, feat_dim: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, max_regions + 1, (n,), generator=gen)
    counts[0] = max_regions
    features = torch.randn(n, max_regions, feat_dim, generator=gen)
    x1y1 = torch.rand(n, max_regions, 2, generator=gen) * 0.5
    boxes = torch.cat([x1y1, x1y1 + 0.1 + 0.4 * torch.rand(n, max_regions, 2, generator=gen)], -1)
    return features, boxes, counts


def test_image_encoding_is_batch_invariant(tiny_minilm: tuple[Teran, SentenceTokenizer]) -> None:
    model, _ = tiny_minilm
    features, boxes, counts = _regions(6, 12, model.cfg.vision.feat_dim, seed=0)
    with torch.no_grad():
        batch = model.encode_image(features, boxes, counts)
        for i in range(6):
            n = int(counts[i])
            # alone, with no padding at all
            alone = model.encode_image(
                features[i : i + 1, :n], boxes[i : i + 1, :n], counts[i : i + 1]
            )
            torch.testing.assert_close(
                alone.slots[0, : n + 1], batch.slots[i, : n + 1], rtol=0, atol=1e-5
            )
        reordered = model.encode_image(features.flip(0), boxes.flip(0), counts.flip(0))
    for i in range(6):
        n = int(counts[i]) + 1
        torch.testing.assert_close(
            reordered.slots[5 - i, :n], batch.slots[i, :n], rtol=0, atol=1e-5
        )


def test_text_encoding_is_batch_invariant(tiny_minilm: tuple[Teran, SentenceTokenizer]) -> None:
    model, tokenizer = tiny_minilm
    tokens = tokenizer(SENTENCES)
    with torch.no_grad():
        batch = model.encode_text(tokens.ids, tokens.lengths)
        for i, sentence in enumerate(SENTENCES):
            one = tokenizer([sentence])
            alone = model.encode_text(one.ids, one.lengths)
            n = int(one.lengths[0])
            torch.testing.assert_close(alone.tokens[0, :n], batch.tokens[i, :n], rtol=0, atol=1e-5)


def test_pipelines_run_separately(tiny_minilm: tuple[Teran, SentenceTokenizer]) -> None:
    """Images are encoded without touching the text side, and sentences without the image side."""
    model, tokenizer = tiny_minilm
    calls: list[str] = []
    hooks = [
        module.register_forward_hook(lambda *_, name=name: calls.append(name))
        for name, module in (("visual", model.visual), ("textual", model.textual.backbone))
    ]
    try:
        features, boxes, counts = _regions(2, 5, model.cfg.vision.feat_dim, seed=1)
        with torch.no_grad():
            images = model.encode_image(features, boxes, counts)
            assert calls == ["visual"]
            tokens = tokenizer(SENTENCES[:2])
            texts = model.encode_text(tokens.ids, tokens.lengths)
            assert calls == ["visual", "textual"]
    finally:
        for hook in hooks:
            hook.remove()
    # every valid vector is unit-length, padding is zero
    assert torch.allclose(
        images.slots[0, : int(counts[0]) + 1].norm(dim=-1), torch.ones(1), atol=1e-5
    )
    assert texts.tokens[1, int(texts.lengths[1]) :].abs().sum() == 0


def test_loss_scores_equal_the_exact_scorer(tiny_minilm: tuple[Teran, SentenceTokenizer]) -> None:
    """The training objective scores pairs with the same numbers as the chunked scorer."""
    model, tokenizer = tiny_minilm
    features, boxes, counts = _regions(4, 7, model.cfg.vision.feat_dim, seed=2)
    tokens = tokenizer(SENTENCES)
    batch = PairBatch(
        features=features,
        boxes=boxes,
        n_regions=counts,
        token_ids=tokens.ids,
        lengths=tokens.lengths,
        image_index=torch.arange(4),
        caption_index=torch.arange(4),
    )
    model.eval()
    with torch.no_grad():
        out = TeranTask(model, "MrSw")(batch)
        images = model.encode_image(features, boxes, counts)
        texts = model.encode_text(tokens.ids, tokens.lengths)
        chunked = alignment_scores(
            images.regions, images.region_mask, texts.words, texts.word_mask, "MrSw", max_cells=7
        )
    torch.testing.assert_close(out["scores"], chunked, rtol=0, atol=1e-6)
    assert out["loss"].item() >= 0


def test_bad_image_inputs_name_the_field(tiny_minilm: tuple[Teran, SentenceTokenizer]) -> None:
    model, _ = tiny_minilm
    features, boxes, counts = _regions(2, 5, model.cfg.vision.feat_dim, seed=3)
    with pytest.raises(ValueError, match="features"):
        model.encode_image(features[..., :10], boxes, counts)
    with pytest.raises(ValueError, match="boxes"):
        model.encode_image(features, boxes[..., :3], counts)
    with pytest.raises(ValueError, match="n_regions"):
        model.encode_image(features, boxes, torch.tensor([0, 2]))


def test_tokenizer_limits(tiny_minilm: tuple[Teran, SentenceTokenizer]) -> None:
    _, tokenizer = tiny_minilm
    long = " ".join(["word"] * 100)
    with pytest.raises(ValueError, match=r"sentences\[1\] has 102 tokens"):
        tokenizer(["fine", long])
    assert tokenizer([long], truncate=True).lengths.item() == tokenizer.max_tokens
    with pytest.raises(ValueError, match=r"sentences\[0\] is empty"):
        tokenizer(["  "])


def test_registry_configs_are_valid() -> None:
    names = list_models()
    for dataset in ("coco", "f30k"):
        for variant in ("MrSw", "MwSr", "symm", "MrSw-sharedTE"):
            assert f"teran-{dataset}-{variant}" in names
    for name in names:
        cfg = get_model_config(name)
        assert isinstance(cfg, TeranCfg)
    assert get_model_config("teran-coco-MrSw-sharedTE").shared_transformer
    assert get_model_config("teran-f30k-symm").alignment == "symm"
    with pytest.raises(ValueError, match="unknown key"):
        TeranCfg.from_dict({"embed_dim": 8, "hidden": 3})
    with pytest.raises(KeyError, match="unknown model config"):
        get_model_config("teran-nope")


def test_missing_backbone_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match="bert-base-uncased"):
        create_model("teran-coco-MrSw")


def test_paper_config_matches_full_size_reference_keys(reference_dir: Path, tmp_path: Path) -> None:
    """teran-coco-MrSw with a bert-base geometry has exactly the reference's keys and shapes."""
    folder = tmp_path / "bert-base-geometry"
    BertConfig().save_pretrained(folder)
    minilm = resolve_backbone("all-minilm-l6-v2")
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).write_bytes((minilm / name).read_bytes())
    model, _ = create_model("teran-coco-MrSw", backbone=folder, pretrained_backbone=False)
    reference = {}
    for line in (reference_dir / "teran-full-keys.txt").read_text().splitlines():
        key, shape = line.split("\t")
        reference[key] = torch.empty(json.loads(shape), device="meta")
    mapped, ignored = map_reference_state(reference)
    ours = model.state_dict()
    assert set(mapped) == set(ours)
    assert all(tuple(mapped[k].shape) == tuple(ours[k].shape) for k in ours)
    assert len(ignored) >= 5
    params = sum(v.numel() for v in ours.values())
    ignored_params = sum(reference[k].numel() for k in ignored)
    # the reference stores the word embeddings twice; 215,473,920 distinct parameters in all
    assert (
        params + ignored_params - reference["img_txt_enc.txt_enc.word_embeddings.weight"].numel()
        == 215_473_920
    )
