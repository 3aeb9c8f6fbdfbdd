"""The demo's collection: synthetic test scenes (with held-out captions whose true image is
known) and the photos that ship inside scikit-image, as items for the client."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console

from teran.data.synthetic import SyntheticScenes
from teran_client import Item
from teran_dev.launcher import REPO

DEFAULT_CHECKPOINT = REPO / "models" / "teran-synthetic-tiny"

PHOTOS: tuple[tuple[str, str], ...] = (
    ("astronaut", "astronaut.png"),
    ("chelsea", "chelsea.png"),
    ("coffee", "coffee.png"),
    ("rocket", "rocket.jpg"),
    ("camera", "camera.png"),
    ("coins", "coins.png"),
    ("moon", "moon.png"),
    ("clock", "clock_motion.png"),
    ("hubble_deep_field", "hubble_deep_field.jpg"),
    ("retina", "retina.jpg"),
    ("immunohistochemistry", "ihc.png"),
    ("colorwheel", "color.png"),
    ("cell", "cell.png"),
    ("brick", "brick.png"),
    ("grass", "grass.png"),
    ("page", "page.png"),
    ("eagle", "eagle.png"),
    ("lily", "lily_of_the_valley.jpg"),
)
"""scikit-image sample photos (loader, file). Some are fetched on first use rather than shipped
in the wheel: those are skipped, so the demo never touches the network."""

DEMO_SEED = 7
"""Seed of the demo's synthetic test scenes: neither the training (0) nor the validation (1) nor
the benchmark's test (0) scenes."""
HELD_OUT_CAPTIONS = 60
"""Captions whose true image's rank the demo measures (R@1 over the synthetic collection)."""


@dataclass
class DemoData:
    items: list[Item] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def _to_image(array: np.ndarray) -> Image.Image:
    """A scikit-image sample (uint8 grey, RGB, RGBA, bool or float) -> RGB picture."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        lo, hi = float(array.min()), float(array.max())
        array = ((array - lo) / ((hi - lo) or 1.0) * 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def load_photos(console: Console) -> tuple[list[tuple[str, bytes]], list[str]]:
    """(name, JPEG bytes) for the sample photos bundled with scikit-image, and skipped names."""
    try:
        import skimage.data as skdata
    except ImportError:
        console.print("[yellow]scikit-image not installed: no photos[/yellow]")
        return [], [name for name, _ in PHOTOS]
    bundled = Path(skdata.__file__).parent
    photos: list[tuple[str, bytes]] = []
    skipped: list[str] = []
    for name, filename in PHOTOS:
        if not (bundled / filename).is_file():  # would need a download: never try
            skipped.append(name)
            continue
        try:
            photos.append((name, _jpeg(_to_image(np.asarray(getattr(skdata, name)())))))
        except Exception:
            skipped.append(name)
    return photos, skipped


def demo_data(n_synthetic: int, console: Console) -> DemoData:
    """Synthetic test-split scenes (their first caption in the payload) and bundled photos."""
    data = DemoData()
    scenes = SyntheticScenes(n_synthetic, split="test", seed=DEMO_SEED)
    for i in range(n_synthetic):
        image_id = f"synthetic/{scenes.image_id(i)}"
        data.images[image_id] = png_bytes(scenes.image(i))
        data.captions[image_id] = scenes.captions(i)[0]
        data.items.append(
            Item(
                id=image_id,
                image=data.images[image_id],
                payload={"source": "synthetic", "caption": data.captions[image_id]},
            )
        )
    photos, data.skipped = load_photos(console)
    for name, jpeg in photos:
        image_id = f"photo/{name}"
        data.images[image_id] = jpeg
        data.items.append(
            Item(
                id=image_id,
                image=jpeg,
                uri=f"skimage.data.{name}",
                payload={"source": "photo", "name": name},
            )
        )
    return data


def held_out_queries(n_synthetic: int, count: int = HELD_OUT_CAPTIONS) -> list[tuple[str, str]]:
    """(caption, image id): one distinctive caption (false for the other 3 images of its
    confusable group) of each of `count` ingested scenes spread over the collection, so each
    query has one right answer and the demo can say where it ranks."""
    if n_synthetic == 0 or count == 0:
        return []
    scenes = SyntheticScenes(n_synthetic, split="test", seed=DEMO_SEED)
    step = max(1, n_synthetic // count)
    out: list[tuple[str, str]] = []
    for index in range(0, n_synthetic, step)[:count]:
        captions = scenes.distinctive_captions(index) or scenes.captions(index)
        out.append((captions[0], f"synthetic/{scenes.image_id(index)}"))
    return out
