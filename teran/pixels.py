"""Pictures to the extractor's input pixels, without torch: what a Triton-backed image encoder
sends to the pixels model, and what `teran.regions.to_pixels` gives the in-process extractor as a
tensor."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image


def pixel_array(images: Sequence[Image.Image], side: int) -> np.ndarray:
    """RGB images -> [B, 3, side, side] float32 in [0, 1], resized (the aspect ratio is not
    kept: boxes are fractions of the original image either way). The array is a channels-first
    view of channels-last memory, as the extractor has always been given it."""
    arrays = [
        np.asarray(im.convert("RGB").resize((side, side), Image.Resampling.BILINEAR))
        for im in images
    ]
    batch = np.stack(arrays).transpose(0, 3, 1, 2)
    return np.divide(batch.astype(np.float32), np.float32(255.0), dtype=np.float32)
