"""The model inputs made without torch (token ids, pixels) are the ones the torch path gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from teran.backbone import resolve_backbone
from teran.pixels import pixel_array
from teran.regions import to_pixels
from teran.tokenizer import SentenceTokenizer

SENTENCES = [
    "A man riding a wave on top of a surfboard.",
    "two dogs",
    "A red double decker bus drives down a busy city street, next to tall old buildings!",
    "Ünïcode café — naïve façade",
]


@pytest.fixture(scope="module")
def tokenizer() -> SentenceTokenizer:
    return SentenceTokenizer(resolve_backbone("all-minilm-l6-v2"), max_tokens=16)


def test_numpy_tokens_are_the_tokenizers_own(tokenizer: SentenceTokenizer) -> None:
    """Ids and lengths equal Hugging Face's own numpy batch (padding, attention mask)."""
    arrays = tokenizer.encode(SENTENCES[:2] + SENTENCES[3:])
    reference = tokenizer._tok(SENTENCES[:2] + SENTENCES[3:], padding=True, return_tensors="np")
    assert arrays.ids.dtype == arrays.lengths.dtype == np.int64
    np.testing.assert_array_equal(arrays.ids, reference["input_ids"])
    np.testing.assert_array_equal(arrays.lengths, reference["attention_mask"].sum(1))
    assert [t[0] for t in arrays.tokens] == ["[CLS]"] * 3
    assert all(len(t) == n for t, n in zip(arrays.tokens, arrays.lengths, strict=True))


def test_the_tensor_batch_is_the_numpy_batch(tokenizer: SentenceTokenizer) -> None:
    for truncate in (False, True):
        sentences = SENTENCES if truncate else SENTENCES[:2]
        arrays, batch = tokenizer.encode(sentences, truncate), tokenizer(sentences, truncate)
        assert batch.ids.dtype == batch.lengths.dtype == torch.long
        assert torch.equal(batch.ids, torch.from_numpy(arrays.ids))
        assert torch.equal(batch.lengths, torch.from_numpy(arrays.lengths))
        assert batch.tokens == arrays.tokens
    long = tokenizer.encode([SENTENCES[2]], truncate=True)
    assert long.lengths.tolist() == [tokenizer.max_tokens]
    assert long.tokens[0][-1] == "[SEP]"


def _torch_pixels(images: list[Image.Image], side: int) -> torch.Tensor:
    """The pixels as the torch path computed them before the numpy one existed."""
    arrays = [
        np.asarray(im.convert("RGB").resize((side, side), Image.Resampling.BILINEAR))
        for im in images
    ]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return batch.float().div_(255.0)


def _pictures(seed: int) -> list[Image.Image]:
    """Noise in the modes and shapes callers send: RGB, grey, RGBA, palette; wide, tall, tiny."""
    rng = np.random.default_rng(seed)

    def noise(h: int, w: int, c: int) -> np.ndarray:
        return rng.integers(0, 256, (h, w, c), dtype=np.uint8)

    return [
        Image.fromarray(noise(97, 211, 3)),
        Image.fromarray(noise(300, 40, 1)[..., 0]),
        Image.fromarray(noise(64, 64, 4), mode="RGBA"),
        Image.fromarray(noise(50, 75, 3)).convert("P"),
        Image.fromarray(noise(3, 5, 3)),
    ]


@pytest.mark.parametrize("side", [32, 224, 256])
@pytest.mark.parametrize("seed", [0, 1])
def test_numpy_pixels_are_the_torch_pixels(side: int, seed: int) -> None:
    images = _pictures(seed)
    pixels = pixel_array(images, side)
    reference = _torch_pixels(images, side)
    assert pixels.dtype == np.float32 and pixels.shape == (len(images), 3, side, side)
    np.testing.assert_allclose(pixels, reference.numpy(), rtol=0, atol=1e-6)
    tensor = to_pixels(images, side)
    assert tensor.dtype == torch.float32 and torch.equal(tensor, reference)
    # the extractor sees the same memory layout as before (channels last), so the same kernels
    assert tensor.stride() == reference.stride()
